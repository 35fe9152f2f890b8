package wecom

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
)

// TestPanickedHandlingRunsAgain: a handling that panicked (net/http
// recovers it and drops the connection) is not remembered as done: Work
// WeChat's retry runs it.
func TestPanickedHandlingRunsAgain(t *testing.T) {
	var cs callbacks
	now := time.Now()
	func() {
		defer func() { _ = recover() }()
		_ = cs.do(context.Background(), "42", now, func() error { panic("a bug") })
	}()
	ran := false
	if err := cs.do(context.Background(), "42", now, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("the retry: ran %v, err %v; want it run", ran, err)
	}
	ran = false
	if err := cs.do(context.Background(), "42", now, func() error { ran = true; return nil }); err != nil || ran {
		t.Fatalf("a retry after the success: ran %v, err %v; want it answered without running", ran, err)
	}
}

// The claims by which nodes share callbacks are pruned once past
// retryWindow, at most once a pruneEvery, a page at a time.
func TestPruneClaims(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Unix(1_800_000_000, 0)
	c := &Channel{name: "wecom", store: st, now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler)}
	c.pruneCtx, c.pruneStop = context.WithCancel(ctx)
	defer c.Close()
	old, fresh := now.Add(-retryWindow-time.Second).UnixNano(), now.Add(-time.Second).UnixNano()
	want := map[string]bool{}
	for i := range 1203 { // more than two pages
		v, keep := fmt.Sprintf("done %d", old), false
		switch i % 3 {
		case 1:
			v, keep = fmt.Sprintf("run tok %d", fresh), true
		case 2:
			v = fmt.Sprintf("run tok %d", old)
		}
		key := fmt.Sprintf("%s%05d", c.claimPrefix(), i)
		if err := st.PutSetting(ctx, key, v); err != nil {
			t.Fatal(err)
		}
		want[key] = keep
	}
	if err := st.PutSetting(ctx, "wecom.other.cb.1", fmt.Sprintf("done %d", old)); err != nil {
		t.Fatal(err)
	}
	c.pruneSoon()
	c.pruning.Wait()
	for key, keep := range want {
		_, err := st.Setting(ctx, key)
		if kept := err == nil; kept != keep {
			t.Fatalf("%s: kept %v, want %v", key, kept, keep)
		}
	}
	if _, err := st.Setting(ctx, "wecom.other.cb.1"); err != nil {
		t.Error("another instance's claim was pruned")
	}
	// Within pruneEvery, nothing is read again.
	if err := st.PutSetting(ctx, c.claimPrefix()+"late", fmt.Sprintf("done %d", old)); err != nil {
		t.Fatal(err)
	}
	c.pruneSoon()
	c.pruning.Wait()
	if _, err := st.Setting(ctx, c.claimPrefix()+"late"); err != nil {
		t.Error("pruned again within pruneEvery")
	}
	now = now.Add(pruneEvery)
	c.pruneSoon()
	c.pruning.Wait()
	if _, err := st.Setting(ctx, c.claimPrefix()+"late"); err == nil {
		t.Error("not pruned after pruneEvery")
	}
}

// On one node a callback is not claimed in the store (the node's memory
// covers Work WeChat's retries); on a cluster node it is, and a run that
// panics releases its claim, so that a retry runs it.
func TestClusterOnceClaims(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &Channel{name: "wecom", store: st, now: time.Now, log: slog.New(slog.DiscardHandler), claimToken: "tok"}
	c.pruneCtx, c.pruneStop = context.WithCancel(ctx)
	defer c.Close()
	claims := func() int {
		kvs, err := st.Settings(ctx, c.claimPrefix(), "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	ran := 0
	if err := c.clusterOnce(ctx, "1", func() error { ran++; return nil }); err != nil || ran != 1 || claims() != 0 {
		t.Fatalf("one node: err %v, ran %d, %d claims stored; want it run, nothing stored", err, ran, claims())
	}
	c.clustered = true
	func() {
		defer func() { _ = recover() }()
		_ = c.clusterOnce(ctx, "2", func() error { panic("a bug") })
	}()
	if n := claims(); n != 0 {
		t.Fatalf("%d claims after a panicked run, want it released", n)
	}
	if err := c.clusterOnce(ctx, "2", func() error { ran++; return nil }); err != nil || ran != 2 {
		t.Fatalf("the retry after a panic: %v, ran %d", err, ran)
	}
	if err := c.clusterOnce(ctx, "2", func() error { ran++; return nil }); err != nil || ran != 2 {
		t.Fatalf("a retry after it was done: %v, ran %d times, want once", err, ran)
	}
	// Closed: no pruning pass starts.
	c.Close()
	c.prunedAt.Store(0)
	c.pruneSoon()
	c.pruning.Wait()
}
