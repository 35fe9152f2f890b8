package wxapi

import (
	"testing"
	"time"
)

// TestReplaysForgetWhatCannotComeBack: a query is remembered while its
// timestamp could still pass CheckTimestamp, and at most max of them.
func TestReplaysForgetWhatCannotComeBack(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var r Replays
	if !r.Check("1", "n", "sig", []byte("a"), false, t0) || !r.Check("1", "n", "SIG", []byte("a"), false, t0) {
		t.Fatal("a first callback, or its retry, refused")
	}
	if r.Check("1", "n", "sig", []byte("b"), false, t0.Add(2*MaxSkew)) {
		t.Fatal("another body under the same query accepted within 2 × MaxSkew")
	}
	r.Check("2", "n", "sig", nil, false, t0.Add(2*MaxSkew+time.Second)) // the first has expired by now
	if _, ok := r.seen["1\x00n\x00sig"]; ok || len(r.queue) != 1 {
		t.Fatalf("expired query kept: %d queued", len(r.queue))
	}

	// An encrypted callback (its body covered by msg_signature) passes
	// again even encrypted afresh; a plaintext body under its query never.
	if !r.Check("3", "n", "sig", []byte("sealed once"), true, t0) || !r.Check("3", "n", "sig", []byte("sealed again"), true, t0) {
		t.Fatal("an encrypted callback's retry, encrypted afresh, refused")
	}
	if r.Check("3", "n", "sig", []byte("sealed once"), false, t0) {
		t.Fatal("a plaintext body under an encrypted callback's query accepted")
	}

	small := Replays{max: 3}
	for i := range 5 {
		small.Check(string(rune('a'+i)), "n", "sig", nil, false, t0)
	}
	if len(small.seen) != 3 || len(small.queue) != 3 {
		t.Fatalf("%d remembered, %d queued; want the newest 3", len(small.seen), len(small.queue))
	}
	if _, ok := small.seen["a\x00n\x00sig"]; ok {
		t.Fatal("the oldest query was kept over the newest")
	}
}
