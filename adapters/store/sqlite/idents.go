package sqlite

import (
	"context"
	"hash/maphash"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// identFilter tells the identities that have no conversation apart without
// a query: a Bloom filter of every identity (channel instance, external id)
// that has one. A visitor's first WebSocket hello asks for their newest
// conversation, and a visitor who just started a session has none: that
// read, its SQLite read transaction and the goroutine modernc starts to
// interrupt a query, cost the server 11–16 % of its CPU per new-visitor
// handshake (BENCHMARKS.md, "Day"). Conversations answers such a question
// from the filter when it can.
//
// "No" is exact, "maybe" is a query. The writer adds an identity before the
// transaction that gives it a conversation commits (insertConv, and
// MoveIdentity for the identity conversations move to), so a read that
// could see that conversation finds its bits set; bits are never cleared
// (a conversation is never deleted, and one moved away leaves a harmless
// "maybe" behind). The conversations stored before Open are added by a
// scan that runs beside the writer; until it is done every answer is
// "maybe". The filter is sized at Open, 32 bits per conversation then
// stored (a power of two, between identMinBits and identMaxBits); it never
// grows: as conversations are added its "maybe"s grow more frequent (at
// the start between 1 in 5,000 and 1 in 74,000, as the rounding gives; 1 in
// 400 at most once they have doubled) and cost what every read cost
// before, until the next start sizes it again.
type identFilter struct {
	seed  maphash.Seed
	mask  uint64 // bit count - 1 (a power of two)
	words []atomic.Uint64
	ready atomic.Bool // the scan of the conversations stored before Open is done
}

const (
	identHashes   = 4       // bits set per identity
	identBitsEach = 32      // bits per conversation stored at Open
	identMinBits  = 1 << 21 // 256 KB
	identMaxBits  = 1 << 28 // 32 MB: 8 million conversations at 32 bits; positions fit in 32 bits
)

// newIdentFilter returns a filter sized for convs conversations stored
// (the highest conversation ID: at least their number).
func newIdentFilter(convs int64) *identFilter {
	size := uint64(identMaxBits)
	if convs <= identMaxBits/identBitsEach {
		size = max(uint64(identMinBits), uint64(1)<<bits.Len64(uint64(max(convs, 1))*identBitsEach-1))
	}
	return &identFilter{seed: maphash.MakeSeed(), mask: size - 1, words: make([]atomic.Uint64, size/64)}
}

// hash returns the two halves of identity's hash; the second is odd, so
// the positions h1 + i*h2 differ for every i.
func (f *identFilter) hash(channel, externalID string) (h1, h2 uint64) {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(channel)
	h.WriteByte(0)
	h.WriteString(externalID)
	sum := h.Sum64()
	return sum & 0xffffffff, sum>>32 | 1
}

// add records that identity has a conversation (or is about to).
func (f *identFilter) add(channel, externalID string) {
	h1, h2 := f.hash(channel, externalID)
	for i := range uint64(identHashes) {
		b := (h1 + i*h2) & f.mask
		f.words[b/64].Or(1 << (b % 64))
	}
}

// mayHave reports false only if identity has no conversation.
func (f *identFilter) mayHave(channel, externalID string) bool {
	if !f.ready.Load() {
		return true
	}
	h1, h2 := f.hash(channel, externalID)
	for i := range uint64(identHashes) {
		b := (h1 + i*h2) & f.mask
		if f.words[b/64].Load()&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// identScanPage is how many conversations one read of fillIdents covers:
// each page is a read transaction of its own, so that the scan of a large
// database holds no snapshot (which keeps the WAL from starting over) for
// long. A variable for tests.
var identScanPage = 4096

// fillIdentsHook, when set by a test, runs before the scan; identPageHook
// before each page, whose read fails with its error.
var (
	fillIdentsHook func()
	identPageHook  func() error
)

// identRetry is how long fillIdents waits before it reads a page again
// after a failure. A variable for tests.
var identRetry = 5 * time.Second

// fillIdents adds the identities of the conversations stored before Open
// to s.idents, then marks it ready. The writer adds new ones meanwhile,
// and those a page after the first will find again are added twice,
// harmlessly. A page that cannot be read is read again identRetry later
// (the filter answers "maybe" meanwhile, as if there were none), until
// ctx ends with Close.
func (s *Store) fillIdents(ctx context.Context) {
	defer close(s.identsDone)
	if fillIdentsHook != nil {
		fillIdentsHook()
	}
	failing := false
	for after := int64(math.MinInt64); ; { // every ID: kefu's start at 1, a hand-edited file's need not
		n, last, err := s.fillIdentsPage(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("sqlite: reading the identities with a conversation failed; every identity's conversations are queried until it succeeds", "err", err)
				failing = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(identRetry):
			}
			continue
		}
		if failing {
			s.log.Info("sqlite: reading the identities with a conversation succeeded")
			failing = false
		}
		if n < identScanPage {
			break
		}
		after = last
	}
	s.idents.ready.Store(true)
}

// fillIdentsPage adds the identities of up to identScanPage conversations
// with an ID above after, and returns how many it read and the last ID.
func (s *Store) fillIdentsPage(ctx context.Context, after int64) (n int, last int64, err error) {
	if identPageHook != nil {
		if err := identPageHook(); err != nil {
			return 0, 0, err
		}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, channel, external_id FROM conversations WHERE id > ? ORDER BY id LIMIT ?`,
		after, identScanPage)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = rows.Close() }()
	var channel, ext string
	for rows.Next() {
		if err := rows.Scan(&last, &channel, &ext); err != nil {
			return n, last, err
		}
		s.idents.add(channel, ext)
		n++
	}
	return n, last, rows.Err()
}
