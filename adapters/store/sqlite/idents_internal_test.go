package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// storedIdentities returns the path of a database that holds a conversation
// of each of identities old0 … old(n-1) on channel web, closed.
func storedIdentities(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kefu.db")
	s := openStore(t, Options{Path: path})
	for i := range n {
		if _, err := s.Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: fmt.Sprint("old", i), Message: core.Message{Kind: core.KindText, Text: "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitScan waits for s's identity scan to end, failing the test if it
// does not within a minute (a scan that loops).
func waitScan(t *testing.T, s *Store) {
	t.Helper()
	select {
	case <-s.identsDone:
	case <-time.After(time.Minute):
		t.Fatal("the identity scan did not end")
	}
}

// The filter never says "no" for an identity added, says "maybe" for
// everything until it is ready, and "no" for almost every other.
func TestIdentFilter(t *testing.T) {
	f := newIdentFilter(0)
	if f.mask+1 != identMinBits {
		t.Fatalf("%d bits for an empty store, want %d", f.mask+1, identMinBits)
	}
	for _, tc := range []struct {
		convs int64
		bits  uint64
	}{
		{-1, identMinBits},
		{1, identMinBits},
		{1 << 20, 1 << 20 * identBitsEach},
		{1<<20 + 1, 1 << 21 * identBitsEach},
		{identMaxBits / identBitsEach, identMaxBits},
		{identMaxBits/identBitsEach + 1, identMaxBits},
		{1<<58 + 1, identMaxBits}, // a stray huge ID: capped, not an overflow
		{math.MaxInt64, identMaxBits},
	} {
		f := newIdentFilter(tc.convs)
		if f.mask+1 != tc.bits || uint64(len(f.words))*64 != tc.bits {
			t.Errorf("%d conversations: %d bits in %d words, want %d", tc.convs, f.mask+1, len(f.words), tc.bits)
		}
	}
	const n = 20000
	for i := range n {
		f.add("web", fmt.Sprint("v", i))
	}
	if !f.mayHave("web", "absent") {
		t.Fatal("no before the filter is ready")
	}
	f.ready.Store(true)
	for i := range n {
		if !f.mayHave("web", fmt.Sprint("v", i)) {
			t.Fatalf("no for v%d, which was added", i)
		}
	}
	maybe := 0
	for i := range n {
		if f.mayHave("web", fmt.Sprint("w", i)) {
			maybe++
		}
		if f.mayHave("telegram", fmt.Sprint("v", i)) { // another instance's identity
			maybe++
		}
	}
	// 2^21 bits, 4 per identity, 20,000 identities: 2 in a million
	// expected (one bit per identity would give 1 in 100).
	if maybe > 40 {
		t.Errorf("maybe for %d of %d identities never added", maybe, 2*n)
	}
}

// Conversations answers for an identity without a conversation without a
// query, and finds the conversations of every other: those stored before
// Open (the scan), those created since, and those moved to an identity.
func TestIdentFilterConversations(t *testing.T) {
	ctx := context.Background()
	path := storedIdentities(t, 3)

	s := openStore(t, Options{Path: path})
	waitScan(t, s)
	if !s.idents.ready.Load() {
		t.Fatal("the scan did not finish")
	}
	count := func(ext string) int {
		t.Helper()
		cs, err := s.Conversations(ctx, core.ConversationFilter{Channel: "web", ExternalID: ext, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	for i := range 3 {
		if n := count(fmt.Sprint("old", i)); n != 1 {
			t.Errorf("old%d, stored before Open: %d conversations, want 1", i, n)
		}
	}
	before := s.identSkips.Load()
	if n := count("new"); n != 0 {
		t.Fatalf("a new identity has %d conversations", n)
	}
	if s.identSkips.Load() != before+1 {
		t.Fatal("a new identity's conversations were queried")
	}
	if _, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "new", Message: core.Message{Kind: core.KindText, Text: "hi"}}); err != nil {
		t.Fatal(err)
	}
	if n := count("new"); n != 1 {
		t.Errorf("after its first message the new identity has %d conversations, want 1", n)
	}
	if err := s.MoveIdentity(ctx, "web", "old0", "verified"); err != nil {
		t.Fatal(err)
	}
	if n := count("verified"); n != 1 {
		t.Errorf("the identity conversations moved to has %d, want 1", n)
	}
	if n := count("old0"); n != 0 {
		t.Errorf("the identity conversations moved from has %d, want 0", n)
	}
	// Other filters with an identity are answered the same way.
	cs, err := s.Conversations(ctx, core.ConversationFilter{Channel: "web", ExternalID: "nobody", Statuses: []core.ConversationStatus{core.StatusPending}})
	if err != nil || len(cs) != 0 {
		t.Fatalf("%d conversations, %v", len(cs), err)
	}
}

// Until the scan is done, every identity's conversations are queried.
func TestIdentFilterNotReady(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})
	waitScan(t, s)
	s.idents.ready.Store(false)
	before := s.identSkips.Load()
	cs, err := s.Conversations(ctx, core.ConversationFilter{Channel: "web", ExternalID: "new", Limit: 1})
	if err != nil || len(cs) != 0 {
		t.Fatalf("%d conversations, %v", len(cs), err)
	}
	if s.identSkips.Load() != before {
		t.Error("the filter answered before the scan was done")
	}
}

// A closed store says so, filter or not.
func TestIdentFilterClosed(t *testing.T) {
	s := openStore(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conversations(context.Background(), core.ConversationFilter{Channel: "web", ExternalID: "new"}); err != core.ErrClosed {
		t.Fatalf("err %v, want ErrClosed", err)
	}
}

// Just after a start, before the scan has read them, the conversations
// stored before are found: the filter answers nothing until it is ready.
// The scan reads in pages and finds every one.
func TestIdentFilterBeforeTheScan(t *testing.T) {
	ctx := context.Background()
	path := storedIdentities(t, 5)

	release := make(chan struct{})
	fillIdentsHook = func() { <-release }
	defer func() { fillIdentsHook = nil }()
	defer func(n int) { identScanPage = n }(identScanPage)
	identScanPage = 2 // 5 conversations: 3 pages, the last one short
	s := openStore(t, Options{Path: path})
	defer func() { // on a failure before the release: let the scan end before the globals are restored
		select {
		case <-release:
		default:
			close(release)
		}
		<-s.identsDone
	}()
	for i := range 5 {
		cs, err := s.Conversations(ctx, core.ConversationFilter{Channel: "web", ExternalID: fmt.Sprint("old", i), Limit: 1})
		if err != nil || len(cs) != 1 {
			t.Fatalf("old%d before the scan: %d conversations (%v), want 1", i, len(cs), err)
		}
	}
	if s.identSkips.Load() != 0 {
		t.Fatal("the filter answered before the scan")
	}
	close(release)
	waitScan(t, s)
	wantScanned(t, s, 5)
	if s.idents.mayHave("web", "new") {
		t.Error("maybe for an identity never stored")
	}
}

// A page the scan cannot read is read again: the filter is ready, and
// right, once it succeeds.
func TestIdentFilterScanRetries(t *testing.T) {
	path := storedIdentities(t, 3)
	defer func(n int, d time.Duration) { identScanPage, identRetry, identPageHook = n, d, nil }(identScanPage, identRetry)
	identScanPage, identRetry = 2, time.Millisecond
	var pages, failed atomic.Int64
	identPageHook = func() error {
		if pages.Add(1)%2 == 0 { // every second read fails: the second page, once
			failed.Add(1)
			return errors.New("disk I/O error")
		}
		return nil
	}
	s := openStore(t, Options{Path: path})
	waitScan(t, s)
	wantScanned(t, s, 3)
	if failed.Load() == 0 {
		t.Errorf("no read failed in %d", pages.Load())
	}
}

// wantScanned checks that the scan finished and the filter has the n
// identities storedIdentities made.
func wantScanned(t *testing.T, s *Store, n int) {
	t.Helper()
	if !s.idents.ready.Load() {
		t.Fatal("the scan did not finish")
	}
	for i := range n {
		if !s.idents.mayHave("web", fmt.Sprint("old", i)) {
			t.Errorf("old%d: the scan missed it", i)
		}
	}
}
