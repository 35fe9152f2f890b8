package sqlite

import (
	"context"
	"testing"
	"time"
)

// TestLeaseRenewalDoesNotWaitForTheWriter: while the writer is busy (here
// held inside a batch until the test lets it go), a lease is taken, renewed
// and released at once: a write backlog must not make the node lose its
// own leases.
func TestLeaseRenewalDoesNotWaitForTheWriter(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})

	busy, release := make(chan struct{}), make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		wrote <- s.do(ctx, func(*wtx) error { close(busy); <-release; return nil })
	}()
	<-busy
	defer func() {
		close(release)
		if err := <-wrote; err != nil {
			t.Errorf("the blocking write: %v", err)
		}
	}()

	done := make(chan error, 1)
	go func() {
		for _, holder := range []string{"kefu-1", "kefu-1"} { // taken, then renewed
			if ok, err := s.AcquireLease(ctx, "deliver.wa", holder, time.Minute); err != nil || !ok {
				done <- err
				return
			}
		}
		if ok, err := s.AcquireLease(ctx, "deliver.wa", "kefu-2", time.Minute); ok || err != nil {
			done <- err
			return
		}
		done <- s.ReleaseLease(ctx, "deliver.wa", "kefu-1")
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("lease calls while the writer is busy: %v", err)
		}
	case <-time.After(10 * time.Second): // a bound for failing, not a timing assertion
		t.Fatal("lease calls waited for the writer")
	}
	if ok, err := s.AcquireLease(ctx, "deliver.wa", "kefu-2", time.Minute); err != nil || !ok {
		t.Fatalf("after the release: AcquireLease = %v, %v", ok, err)
	}
}

// TestLeaseCallsHonourCtx: a cancelled ctx is an error and changes nothing.
func TestLeaseCallsHonourCtx(t *testing.T) {
	s := openStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := s.AcquireLease(ctx, "run.tg", "kefu-1", time.Minute); ok || err == nil {
		t.Fatalf("AcquireLease with a cancelled ctx = %v, %v", ok, err)
	}
	if ok, err := s.AcquireLease(context.Background(), "run.tg", "kefu-2", time.Minute); err != nil || !ok {
		t.Fatalf("the lease was taken by a cancelled call: %v, %v", ok, err)
	}
	if err := s.ReleaseLease(ctx, "run.tg", "kefu-2"); err == nil {
		t.Fatal("ReleaseLease with a cancelled ctx succeeded")
	}
	if ok, _ := s.AcquireLease(context.Background(), "run.tg", "kefu-1", time.Minute); ok {
		t.Fatal("a cancelled release freed the lease")
	}
}
