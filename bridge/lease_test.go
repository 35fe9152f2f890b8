package bridge_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/bridge"
)

// fakeLeases is a core.LeaseStore in memory whose expiry follows a fake
// clock. cut makes one holder's calls fail, as for a node that cannot reach
// the database.
type fakeLeases struct {
	clock *fakeClock

	mu      sync.Mutex
	holder  map[string]string
	expires map[string]time.Time
	calls   map[string]int // AcquireLease calls per holder
	down    map[string]bool
}

func newFakeLeases(clock *fakeClock) *fakeLeases {
	return &fakeLeases{clock: clock, holder: map[string]string{}, expires: map[string]time.Time{},
		calls: map[string]int{}, down: map[string]bool{}}
}

func (f *fakeLeases) AcquireLease(_ context.Context, name, holder string, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[holder]++
	if f.down[holder] {
		return false, errors.New("dial tcp 127.0.0.1:5432: connection refused")
	}
	now := f.clock.Now()
	if h, ok := f.holder[name]; ok && h != holder && now.Before(f.expires[name]) {
		return false, nil
	}
	f.holder[name], f.expires[name] = holder, now.Add(ttl)
	return true, nil
}

func (f *fakeLeases) ReleaseLease(_ context.Context, name, holder string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[holder] {
		return errors.New("dial tcp 127.0.0.1:5432: connection refused")
	}
	if f.holder[name] == holder {
		delete(f.holder, name)
		delete(f.expires, name)
	}
	return nil
}

func (f *fakeLeases) cut(holder string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[holder] = down
}

// steal gives the lease to holder, as if it had expired unnoticed.
func (f *fakeLeases) steal(name, holder string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holder[name], f.expires[name] = holder, f.clock.Now().Add(time.Hour)
}

func (f *fakeLeases) holderOf(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holder[name]
}

func (f *fakeLeases) callsOf(holder string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[holder]
}

// work is the leased work of several holders. It records who runs it, how
// often, and whether two ever ran at once.
type work struct {
	mu      sync.Mutex
	running map[string]bool
	runs    map[string]int
	overlap bool
}

func newWork() *work { return &work{running: map[string]bool{}, runs: map[string]int{}} }

// fn is holder's work: it runs until its ctx ends.
func (w *work) fn(holder string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		w.mu.Lock()
		for h, r := range w.running {
			if r && h != holder {
				w.overlap = true
			}
		}
		w.running[holder] = true
		w.runs[holder]++
		w.mu.Unlock()
		<-ctx.Done()
		w.mu.Lock()
		w.running[holder] = false
		w.mu.Unlock()
		return nil
	}
}

func (w *work) isRunning(holder string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[holder]
}

func (w *work) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.overlap {
		t.Fatal("two holders ran the work at the same time")
	}
}

const (
	leaseName = "deliver.wa"
	ttl       = 15 * time.Second
	every     = ttl / 3
)

// runner is one node's RunLeased.
type runner struct {
	holder string
	held   *bridge.HeldLeases
	stop   context.CancelFunc
	done   chan error
}

func startLeased(t *testing.T, store *fakeLeases, w *work, holder string) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{holder: holder, held: bridge.NewHeldLeases(), stop: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- bridge.RunLeased(ctx, bridge.LeaseConfig{Store: store, Name: leaseName, Holder: holder, TTL: ttl,
			Clock: store.clock, Logger: quietLogger(), Held: r.held}, w.fn(holder))
	}()
	t.Cleanup(func() { r.halt(t) })
	return r
}

// halt cancels the runner and waits for RunLeased to return.
func (r *runner) halt(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("RunLeased(%s) = %v", r.holder, err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("RunLeased(%s) did not return after its ctx ended", r.holder)
	}
}

func TestRunLeasedOneHolderAtATime(t *testing.T) {
	clock := newFakeClock()
	store := newFakeLeases(clock)
	w := newWork()
	a := startLeased(t, store, w, "node-a")
	eventually(t, "node-a to run the work", func() bool { return w.isRunning("node-a") && a.held.Held(leaseName) })
	b := startLeased(t, store, w, "node-b")
	eventually(t, "node-b's first attempt", func() bool { return store.callsOf("node-b") == 1 })

	// Renewals and attempts go on; node-a keeps the work.
	for i := 2; i <= 4; i++ {
		clock.Advance(every)
		eventually(t, "a renewal and an attempt", func() bool {
			return store.callsOf("node-a") == i && store.callsOf("node-b") == i
		})
		if !w.isRunning("node-a") || w.isRunning("node-b") || b.held.Held(leaseName) {
			t.Fatal("the work moved while its holder renewed the lease")
		}
	}
	if got := a.held.Names(); len(got) != 1 || got[0] != leaseName {
		t.Fatalf("node-a holds %v", got)
	}

	// node-a stops cleanly: it releases the lease, and node-b takes the work
	// at its next attempt, long before the lease would have expired.
	a.halt(t)
	if store.holderOf(leaseName) != "" {
		t.Fatalf("lease held by %q after a clean stop", store.holderOf(leaseName))
	}
	if a.held.Held(leaseName) {
		t.Fatal("node-a still reports the lease")
	}
	clock.Advance(every)
	eventually(t, "node-b to take the work over", func() bool { return w.isRunning("node-b") && b.held.Held(leaseName) })
	w.check(t)
}

func TestRunLeasedStopsBeforeTakeoverWhenTheStoreIsUnreachable(t *testing.T) {
	clock := newFakeClock()
	store := newFakeLeases(clock)
	w := newWork()
	a := startLeased(t, store, w, "node-a")
	eventually(t, "node-a to run the work", func() bool { return w.isRunning("node-a") })
	startLeased(t, store, w, "node-b")
	eventually(t, "node-b's first attempt", func() bool { return store.callsOf("node-b") == 1 })

	// node-a loses its database: its renewals fail. It keeps the work while
	// the lease may still be its own...
	store.cut("node-a", true)
	clock.Advance(every)
	eventually(t, "node-a's failed renewal", func() bool { return store.callsOf("node-a") >= 2 })
	eventually(t, "node-b's attempt", func() bool { return store.callsOf("node-b") == 2 })
	if !w.isRunning("node-a") {
		t.Fatal("node-a stopped the work after one failed renewal")
	}
	// ...and stops it 2/3 of the TTL after its last renewal, a third of
	// the TTL before the lease expires.
	clock.Advance(every)
	eventually(t, "node-a to stop the work", func() bool { return !w.isRunning("node-a") && !a.held.Held(leaseName) })
	eventually(t, "node-b's attempt", func() bool { return store.callsOf("node-b") == 3 })
	if store.holderOf(leaseName) != "node-a" {
		t.Fatal("the lease changed hands before it expired")
	}
	// The lease expires and node-b takes the work over.
	clock.Advance(every)
	eventually(t, "node-b to take the work over", func() bool { return w.isRunning("node-b") })
	w.check(t)

	// node-a reaches the store again: it finds the lease taken and does not
	// start the work again.
	store.cut("node-a", false)
	calls := store.callsOf("node-a")
	clock.Advance(every)
	eventually(t, "node-a's attempt", func() bool { return store.callsOf("node-a") > calls })
	if w.isRunning("node-a") {
		t.Fatal("node-a took back a lease node-b holds")
	}
	w.check(t)
}

func TestRunLeasedStopsWhenTheLeaseIsTaken(t *testing.T) {
	clock := newFakeClock()
	store := newFakeLeases(clock)
	w := newWork()
	a := startLeased(t, store, w, "node-a")
	eventually(t, "node-a to run the work", func() bool { return w.isRunning("node-a") })

	// node-a stalled past its lease and node-x took it: node-a's next
	// renewal finds out and stops the work at once.
	store.steal(leaseName, "node-x")
	clock.Advance(every)
	eventually(t, "node-a to stop the work", func() bool { return !w.isRunning("node-a") && !a.held.Held(leaseName) })
	if store.holderOf(leaseName) != "node-x" {
		t.Fatal("node-a's release freed node-x's lease")
	}

	// Once node-x lets go, node-a runs the work again (a second call of fn).
	if err := store.ReleaseLease(context.Background(), leaseName, "node-x"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(every)
	eventually(t, "node-a to run the work again", func() bool { return w.isRunning("node-a") })
	w.mu.Lock()
	runs := w.runs["node-a"]
	w.mu.Unlock()
	if runs != 2 {
		t.Fatalf("node-a ran the work %d times, want 2", runs)
	}
}

func TestRunLeasedReturnsWhenTheWorkReturns(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"done", nil},
		{"failed", boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeLeases(newFakeClock())
			err := bridge.RunLeased(context.Background(), bridge.LeaseConfig{Store: store, Name: leaseName,
				Holder: "node-a", Clock: store.clock, Logger: quietLogger()},
				func(context.Context) error { return tc.err })
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("RunLeased = %v, want %v", err, tc.err)
			}
			if h := store.holderOf(leaseName); h != "" {
				t.Fatalf("lease still held by %q", h)
			}
		})
	}
}

func TestRunLeasedStopsWhileWaiting(t *testing.T) {
	store := newFakeLeases(newFakeClock())
	store.steal(leaseName, "node-x")
	w := newWork()
	r := startLeased(t, store, w, "node-a")
	eventually(t, "node-a's attempt", func() bool { return store.callsOf("node-a") == 1 })
	r.halt(t)
	if w.isRunning("node-a") || store.holderOf(leaseName) != "node-x" {
		t.Fatal("a node that never held the lease ran the work or freed the lease")
	}
}

func TestRunLeasedBadConfig(t *testing.T) {
	store := newFakeLeases(newFakeClock())
	ran := false
	fn := func(context.Context) error { ran = true; return nil }
	for _, tc := range []struct {
		name string
		cfg  bridge.LeaseConfig
		fn   func(context.Context) error
		want []string
	}{
		{"empty", bridge.LeaseConfig{}, fn, []string{"Store is nil", "Name is empty", "Holder is empty"}},
		{"short ttl", bridge.LeaseConfig{Store: store, Name: leaseName, Holder: "a", TTL: time.Millisecond}, fn,
			[]string{"TTL 1ms is below the minimum"}},
		{"no work", bridge.LeaseConfig{Store: store, Name: leaseName, Holder: "a"}, nil, []string{"fn is nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bridge.RunLeased(context.Background(), tc.cfg, tc.fn)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if ran || store.callsOf("a") != 0 {
		t.Fatal("a bad config ran the work or touched the store")
	}
}

func TestHeldLeasesGauge(t *testing.T) {
	clock := newFakeClock()
	store := newFakeLeases(clock)
	store.steal("run.tg", "node-x")
	held := bridge.NewHeldLeases()
	reg := prometheus.NewRegistry()
	reg.MustRegister(held)
	w := newWork()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before the Wait above
	for _, name := range []string{"deliver.wa", "run.tg"} {
		wg.Go(func() {
			_ = bridge.RunLeased(ctx, bridge.LeaseConfig{Store: store, Name: name, Holder: "node-a",
				Clock: clock, Logger: quietLogger(), Held: held}, w.fn("node-a"))
		})
	}
	gauge := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "kefu_lease_held" {
				continue
			}
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		return got
	}
	eventually(t, "both leases tried", func() bool {
		g := gauge()
		return len(g) == 2 && g["deliver.wa"] == 1 && g["run.tg"] == 0 && store.callsOf("node-a") == 2
	})
	if got := held.Names(); len(got) != 1 || got[0] != "deliver.wa" {
		t.Fatalf("Names() = %v", got)
	}
}

// TestRunLeasedTellsLossFromStop: fn's ctx ends with ErrLeaseLost when the
// lease was lost (ErrLeaseTaken when another holder has it), so that work
// can drop its grace period; a clean stop has no such cause.
func TestRunLeasedTellsLossFromStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, store *fakeLeases, stop context.CancelFunc)
		want error // nil: not a loss
	}{
		{"store unreachable", func(t *testing.T, store *fakeLeases, _ context.CancelFunc) {
			store.cut("node-a", true)
			store.clock.Advance(every)
			eventually(t, "node-a's failed renewal", func() bool { return store.callsOf("node-a") >= 2 })
			store.clock.Advance(every)
		}, bridge.ErrLeaseLost},
		{"taken", func(_ *testing.T, store *fakeLeases, _ context.CancelFunc) {
			store.steal(leaseName, "node-x")
			store.clock.Advance(every)
		}, bridge.ErrLeaseTaken},
		{"clean stop", func(_ *testing.T, _ *fakeLeases, stop context.CancelFunc) { stop() }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeLeases(newFakeClock())
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			causes := make(chan error, 2)
			done := make(chan error, 1)
			go func() {
				done <- bridge.RunLeased(ctx, bridge.LeaseConfig{Store: store, Name: leaseName, Holder: "node-a",
					TTL: ttl, Clock: store.clock, Logger: quietLogger()}, func(ctx context.Context) error {
					<-ctx.Done()
					causes <- context.Cause(ctx)
					return nil
				})
			}()
			eventually(t, "node-a to take the lease", func() bool { return store.holderOf(leaseName) == "node-a" })
			tc.end(t, store, stop)
			var cause error
			select {
			case cause = <-causes:
			case <-time.After(10 * time.Second):
				t.Fatal("the work was not stopped")
			}
			lost := errors.Is(cause, bridge.ErrLeaseLost)
			if tc.want == nil && lost || tc.want != nil && !errors.Is(cause, tc.want) {
				t.Fatalf("the work's ctx ended with %v, want %v", cause, tc.want)
			}
			if tc.want == bridge.ErrLeaseLost && errors.Is(cause, bridge.ErrLeaseTaken) {
				t.Fatalf("an unreachable store was reported as %v", cause)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("RunLeased = %v", err)
			}
		})
	}
}

// TestRunLeasedFailIfTaken: with FailIfTaken, another holder of the lease
// ends RunLeased with ErrLeaseTaken, found by a renewal or by an attempt
// after the lease lapsed, instead of waiting for its turn; a lapse that
// nobody took over is only a pause.
func TestRunLeasedFailIfTaken(t *testing.T) {
	start := func(t *testing.T, store *fakeLeases, w *work) chan error {
		done := make(chan error, 1)
		ctx, stop := context.WithCancel(context.Background())
		t.Cleanup(stop)
		go func() {
			done <- bridge.RunLeased(ctx, bridge.LeaseConfig{Store: store, Name: leaseName, Holder: "node-a",
				TTL: ttl, Clock: store.clock, Logger: quietLogger(), FailIfTaken: true}, w.fn("node-a"))
		}()
		eventually(t, "node-a to run the work", func() bool { return w.isRunning("node-a") })
		return done
	}
	wait := func(t *testing.T, done chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("RunLeased did not return")
			return nil
		}
	}
	// cutOff makes node-a's store unreachable until it stops the work.
	cutOff := func(t *testing.T, store *fakeLeases, w *work) {
		t.Helper()
		store.cut("node-a", true)
		store.clock.Advance(every)
		eventually(t, "node-a's failed renewal", func() bool { return store.callsOf("node-a") >= 2 })
		store.clock.Advance(every)
		eventually(t, "node-a to stop the work", func() bool { return !w.isRunning("node-a") })
	}
	// advanceUntil moves the clock on a little at a time until cond holds:
	// RunLeased may still be between the work's end and its next wait.
	advanceUntil := func(t *testing.T, clock *fakeClock, what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			clock.Advance(every / 3)
		}
	}

	t.Run("renewal finds another holder", func(t *testing.T) {
		store := newFakeLeases(newFakeClock())
		w := newWork()
		done := start(t, store, w)
		store.steal(leaseName, "node-x")
		store.clock.Advance(every)
		if err := wait(t, done); !errors.Is(err, bridge.ErrLeaseTaken) {
			t.Fatalf("RunLeased = %v, want ErrLeaseTaken", err)
		}
		if w.isRunning("node-a") || store.holderOf(leaseName) != "node-x" {
			t.Fatal("the work still runs, or node-x's lease was freed")
		}
	})

	t.Run("lapsed and taken over", func(t *testing.T) {
		store := newFakeLeases(newFakeClock())
		w := newWork()
		done := start(t, store, w)
		cutOff(t, store, w)
		store.steal(leaseName, "node-x") // lapsed: another process took it
		store.cut("node-a", false)
		var err error
		advanceUntil(t, store.clock, "RunLeased to return", func() bool {
			select {
			case err = <-done:
				return true
			default:
				return false
			}
		})
		if !errors.Is(err, bridge.ErrLeaseTaken) {
			t.Fatalf("RunLeased = %v, want ErrLeaseTaken", err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.runs["node-a"] != 1 {
			t.Fatalf("the work ran %d times, want once", w.runs["node-a"])
		}
	})

	t.Run("lapsed and regained", func(t *testing.T) {
		store := newFakeLeases(newFakeClock())
		w := newWork()
		done := start(t, store, w)
		cutOff(t, store, w)
		store.cut("node-a", false)
		advanceUntil(t, store.clock, "node-a to run the work again", func() bool { return w.isRunning("node-a") })
		select {
		case err := <-done:
			t.Fatalf("RunLeased = %v after regaining the lease", err)
		default:
		}
	})
}
