package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Cluster leases (core.LeaseStore). Expiry is the database's clock, which
// the suite cannot move, so the two tests that need a lease to expire give
// it a millisecond and wait (polling, bounded) for it to lapse; every other
// lease lives for an longTTL.

// leaseTests are the lease subtests, run by Run.
var leaseTests = []struct {
	name string
	fn   func(t *testing.T, s core.Store)
}{
	{"LeaseExclusive", testLeaseExclusive},
	{"LeaseRenew", testLeaseRenew},
	{"LeaseExpiryTakeover", testLeaseExpiry},
	{"LeaseReleaseOnlyByHolder", testLeaseRelease},
	{"LeaseInvalid", testLeaseInvalid},
	{"LeaseClosed", testLeaseClosed},
}

const longTTL = time.Hour // a lease that does not expire during a test

func acquire(t *testing.T, s core.Store, name, holder string, ttl time.Duration) bool {
	t.Helper()
	ok, err := s.AcquireLease(ctx, name, holder, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", name, holder, err)
	}
	return ok
}

func release(t *testing.T, s core.Store, name, holder string) {
	t.Helper()
	if err := s.ReleaseLease(ctx, name, holder); err != nil {
		t.Fatalf("ReleaseLease(%s, %s): %v", name, holder, err)
	}
}

// eventuallyAcquire tries to take the lease until it succeeds (failing after
// a generous bound, which is not a timing assertion).
func eventuallyAcquire(t *testing.T, s core.Store, name, holder string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !acquire(t, s, name, holder, longTTL) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never took lease %s after it expired", holder, name)
		}
		time.Sleep(time.Millisecond)
	}
}

func testLeaseExclusive(t *testing.T, s core.Store) {
	if !acquire(t, s, "deliver.wa", "node-a", longTTL) {
		t.Fatal("a free lease was not taken")
	}
	if acquire(t, s, "deliver.wa", "node-b", longTTL) {
		t.Fatal("node-b took a lease node-a holds")
	}
	// Leases are independent of each other.
	if !acquire(t, s, "deliver.tg", "node-b", longTTL) {
		t.Fatal("node-b could not take another lease")
	}
	if acquire(t, s, "deliver.tg", "node-a", longTTL) {
		t.Fatal("node-a took a lease node-b holds")
	}

	// Of holders racing for a free lease, exactly one gets it.
	const n = 8
	got := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = s.AcquireLease(ctx, "run.slack", fmt.Sprintf("node-%d", i), longTTL) })
	}
	wg.Wait()
	winners := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if got[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d racers got the lease, want 1", winners)
	}
}

func testLeaseRenew(t *testing.T, s core.Store) {
	if !acquire(t, s, "follow.slack", "node-a", longTTL) {
		t.Fatal("a free lease was not taken")
	}
	for range 3 {
		if !acquire(t, s, "follow.slack", "node-a", longTTL) {
			t.Fatal("the holder could not renew its lease")
		}
	}
	if acquire(t, s, "follow.slack", "node-b", longTTL) {
		t.Fatal("another holder took a renewed lease")
	}
	// A renewal sets the expiry to now + ttl, also when that is sooner:
	// renewed for a millisecond, the lease soon goes to another holder.
	if !acquire(t, s, "follow.slack", "node-a", time.Millisecond) {
		t.Fatal("the holder could not renew its lease")
	}
	eventuallyAcquire(t, s, "follow.slack", "node-b")
}

func testLeaseExpiry(t *testing.T, s core.Store) {
	if !acquire(t, s, "run.tg", "node-a", time.Millisecond) {
		t.Fatal("a free lease was not taken")
	}
	// node-a dies: it never renews. Once the lease has expired, node-b
	// takes it, and node-a, coming back, finds it taken.
	eventuallyAcquire(t, s, "run.tg", "node-b")
	if acquire(t, s, "run.tg", "node-a", longTTL) {
		t.Fatal("the old holder took back a lease another holder took over")
	}
	// node-a's late release does not free node-b's lease.
	release(t, s, "run.tg", "node-a")
	if acquire(t, s, "run.tg", "node-c", longTTL) {
		t.Fatal("the old holder's release freed the new holder's lease")
	}
}

func testLeaseRelease(t *testing.T, s core.Store) {
	// Releasing a lease nobody holds is not an error.
	release(t, s, "deliver.wa", "node-a")
	if !acquire(t, s, "deliver.wa", "node-a", longTTL) {
		t.Fatal("a free lease was not taken")
	}
	release(t, s, "deliver.wa", "node-b") // not the holder: nothing happens
	if acquire(t, s, "deliver.wa", "node-b", longTTL) {
		t.Fatal("a release by another holder freed the lease")
	}
	release(t, s, "deliver.wa", "node-a")
	if !acquire(t, s, "deliver.wa", "node-b", longTTL) {
		t.Fatal("a released lease was not free at once")
	}
	if acquire(t, s, "deliver.wa", "node-a", longTTL) {
		t.Fatal("the old holder took back a lease it released")
	}
}

func testLeaseInvalid(t *testing.T, s core.Store) {
	if !acquire(t, s, "deliver.wa", "node-a", longTTL) {
		t.Fatal("a free lease was not taken")
	}
	for _, tc := range []struct {
		name, lease, holder string
		ttl                 time.Duration
	}{
		{"empty name", "", "node-b", longTTL},
		{"empty holder", "deliver.wa", "", longTTL},
		{"zero ttl", "deliver.wa", "node-a", 0},
		{"negative ttl", "deliver.wa", "node-a", -time.Second},
	} {
		if ok, err := s.AcquireLease(ctx, tc.lease, tc.holder, tc.ttl); !errors.Is(err, core.ErrInvalid) || ok {
			t.Errorf("AcquireLease with %s = %v, %v; want ErrInvalid", tc.name, ok, err)
		}
	}
	for _, tc := range []struct{ name, lease, holder string }{
		{"empty name", "", "node-a"},
		{"empty holder", "deliver.wa", ""},
	} {
		if err := s.ReleaseLease(ctx, tc.lease, tc.holder); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("ReleaseLease with %s = %v; want ErrInvalid", tc.name, err)
		}
	}
	// Nothing changed: node-a still holds the lease for its longTTL.
	if acquire(t, s, "deliver.wa", "node-b", longTTL) {
		t.Fatal("bad requests freed the lease")
	}
	if !acquire(t, s, "deliver.wa", "node-a", longTTL) {
		t.Fatal("bad requests took the lease from its holder")
	}
}

func testLeaseClosed(t *testing.T, s core.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "deliver.wa", "node-a", longTTL); !errors.Is(err, core.ErrClosed) {
		t.Errorf("AcquireLease after Close: %v, want ErrClosed", err)
	}
	if err := s.ReleaseLease(ctx, "deliver.wa", "node-a"); !errors.Is(err, core.ErrClosed) {
		t.Errorf("ReleaseLease after Close: %v, want ErrClosed", err)
	}
}
