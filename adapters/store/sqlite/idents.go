package sqlite

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// identFilter tells the identities that have no conversation apart without
// a query: a Bloom filter of every identity (channel instance, external id)
// that has one. A visitor's first WebSocket hello asks for their newest
// conversation, and a visitor who just started a session has none: that
// read, its SQLite read transaction and the goroutine modernc starts to
// interrupt a query, was 15–18 % of the server's CPU per new-visitor
// handshake (BENCHMARKS.md). Conversations answers such a question from the
// filter when it can.
//
// "No" is exact, "maybe" is a query. The writer adds an identity before the
// transaction that gives it a conversation commits (insertConv, and
// MoveIdentity for the identity conversations move to), so a read that
// could see that conversation finds its bits set; bits are never cleared
// (a conversation is never deleted, and one moved away leaves a harmless
// "maybe" behind). The conversations stored before Open are added by a
// scan that runs beside the writer; until it is done every answer is
// "maybe". The filter is sized at Open for twice the conversations then
// stored (at least identMinBits): beyond that its "maybe"s grow more
// frequent and cost what every read cost before, until the next start
// sizes it again.
type identFilter struct {
	seed  maphash.Seed
	mask  uint64 // bit count - 1 (a power of two)
	words []atomic.Uint64
	ready atomic.Bool // the scan of the conversations stored before Open is done
}

const (
	identHashes   = 4       // bits set per identity
	identBitsEach = 32      // bits per conversation stored at Open (16 per identity once they double)
	identMinBits  = 1 << 21 // 256 KB
)

// newIdentFilter returns a filter sized for convs conversations stored.
func newIdentFilter(convs int64) *identFilter {
	n := uint64(max(convs, 0)) * identBitsEach
	size := uint64(identMinBits)
	if n > size {
		size = 1 << bits.Len64(n-1)
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

// fillIdents adds the identities of the conversations stored before Open
// to s.idents, then marks it ready. The writer adds new ones meanwhile. A
// failed scan leaves the filter answering "maybe", as if there were none.
func (s *Store) fillIdents(ctx context.Context) {
	defer close(s.identsDone)
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT channel, external_id FROM conversations`)
	if err != nil {
		s.identsFailed(ctx, err)
		return
	}
	defer func() { _ = rows.Close() }()
	var channel, ext string
	for rows.Next() {
		if err := rows.Scan(&channel, &ext); err != nil {
			s.identsFailed(ctx, err)
			return
		}
		s.idents.add(channel, ext)
	}
	if err := rows.Err(); err != nil {
		s.identsFailed(ctx, err)
		return
	}
	s.idents.ready.Store(true)
}

func (s *Store) identsFailed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.log.Warn("sqlite: reading the identities with a conversation failed; every identity's conversations are queried", "err", err)
	}
}
