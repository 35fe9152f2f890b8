package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/fakeclock"
)

// claimStore keeps leases in memory, expiring on a fake clock; calls for a
// lease that is cut fail, as when the database is unreachable. Any other
// core.Store method panics.
type claimStore struct {
	core.Store
	clock *fakeclock.Clock

	mu      sync.Mutex
	holder  map[string]string
	expires map[string]time.Time
	cut     map[string]bool // by lease name; "" cuts them all
}

func newClaimStore(clock *fakeclock.Clock) *claimStore {
	return &claimStore{clock: clock, holder: map[string]string{}, expires: map[string]time.Time{}, cut: map[string]bool{}}
}

var errUnreachable = errors.New("dial tcp 127.0.0.1:5432: connection refused")

func (s *claimStore) AcquireLease(_ context.Context, name, holder string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut[""] || s.cut[name] {
		return false, errUnreachable
	}
	now := s.clock.Now()
	if h, ok := s.holder[name]; ok && h != holder && now.Before(s.expires[name]) {
		return false, nil
	}
	s.holder[name], s.expires[name] = holder, now.Add(ttl)
	return true, nil
}

func (s *claimStore) ReleaseLease(_ context.Context, name, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut[""] || s.cut[name] {
		return errUnreachable
	}
	if s.holder[name] == holder {
		delete(s.holder, name)
	}
	return nil
}

func (s *claimStore) setCut(name string, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut[name] = cut
}

func (s *claimStore) holderOf(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holder[name]
}

// steal gives the lease to holder for an hour, as another process would
// take it once it lapsed.
func (s *claimStore) steal(name, holder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holder[name], s.expires[name] = holder, s.clock.Now().Add(time.Hour)
}

// claimRig is a node on a shared store with one piece of leased work.
type claimRig struct {
	n     *Node
	clock *fakeclock.Clock
	store *claimStore
	stop  context.CancelFunc
	done  chan error

	mu      sync.Mutex
	running bool
	runs    int
}

const testTTL = 15 * time.Second

func startClaimRig(t *testing.T) *claimRig {
	t.Helper()
	clock := fakeclock.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	r := &claimRig{clock: clock, store: newClaimStore(clock), done: make(chan error, 1)}
	cfg := &config.Config{NodeID: "kefu-a"}
	cfg.Store.Driver = "postgres"
	r.n = &Node{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: r.store,
		leases: bridge.NewHeldLeases(), leaseTTL: testTTL, leaseClk: clock}
	work := leasedWork{name: "deliver.wa", run: func(ctx context.Context) error {
		r.mu.Lock()
		r.running = true
		r.runs++
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
		return nil
	}}
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	var g errgroup.Group
	r.n.runLeased(ctx, &g, []leasedWork{work})
	go func() { r.done <- g.Wait() }()
	t.Cleanup(func() {
		stop()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("the leased work did not stop")
		}
	})
	r.waitFor(t, "the work to run", func() bool { return r.isRunning() })
	return r
}

func (r *claimRig) isRunning() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

func (r *claimRig) runCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs
}

// waitFor polls cond, failing after a generous bound (not a timing
// assertion).
func (r *claimRig) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// advanceUntil moves the fake clock on by a ninth of the TTL at a time,
// letting the leases' goroutines act between steps, until cond holds.
func (r *claimRig) advanceUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		r.clock.Advance(testTTL / 9)
	}
}

// TestLeasedWorkFollowsTheNodeIDClaim: the leased work runs only while the
// node holds its node_id claim, even when the work's own lease could still
// be renewed, and comes back when the claim does.
func TestLeasedWorkFollowsTheNodeIDClaim(t *testing.T) {
	r := startClaimRig(t)
	instance := r.store.holderOf("node.kefu-a")
	if !strings.HasPrefix(instance, "kefu-a/") || r.store.holderOf("deliver.wa") != "kefu-a" {
		t.Fatalf("claim held by %q, work lease by %q", instance, r.store.holderOf("deliver.wa"))
	}

	// Only the claim's renewals fail: the work stops, and its lease is
	// released, before the claim can lapse.
	r.store.setCut("node.kefu-a", true)
	r.advanceUntil(t, "the work to stop", func() bool { return !r.isRunning() })
	r.waitFor(t, "the work's lease to be released", func() bool {
		return r.store.holderOf("deliver.wa") == "" && len(r.n.Leases()) == 0
	})

	// The claim is renewed (nobody took it): the work runs again.
	r.store.setCut("node.kefu-a", false)
	r.advanceUntil(t, "the work to run again", func() bool { return r.isRunning() })
	if r.runCount() != 2 || r.store.holderOf("node.kefu-a") != instance {
		t.Fatalf("work ran %d times, claim held by %q", r.runCount(), r.store.holderOf("node.kefu-a"))
	}
	select {
	case err := <-r.done:
		t.Fatalf("the node's leased work ended with %v", err)
	default:
	}
}

// TestNodeIDClaimTakenIsFatal: the store was unreachable long enough for
// the claim to lapse, and another process with the same node_id claimed
// it. Once the store answers again, this node must not resume the work
// under the shared node_id: it stops with an error naming the node_id.
func TestNodeIDClaimTakenIsFatal(t *testing.T) {
	r := startClaimRig(t)
	r.store.setCut("", true)
	r.advanceUntil(t, "the work to stop", func() bool { return !r.isRunning() })
	r.store.steal("node.kefu-a", "kefu-a/other-host/1/0123456789abcdef")
	r.store.setCut("", false)

	var err error
	r.advanceUntil(t, "the node's leased work to end", func() bool {
		select {
		case err = <-r.done:
			r.done <- err // for the cleanup
			return true
		default:
			return false
		}
	})
	if err == nil || !strings.Contains(err.Error(), `node_id "kefu-a" is in use by another running kefu node`) {
		t.Fatalf("leased work ended with %v, want the node_id conflict", err)
	}
	if n := r.runCount(); n != 1 {
		t.Fatalf("the work ran %d times, want once (not again under another process's claim)", n)
	}
	if got := r.store.holderOf("node.kefu-a"); got != "kefu-a/other-host/1/0123456789abcdef" {
		t.Fatalf("the other process's claim was freed (holder %q)", got)
	}
}

// TestFailedWorkIsTriedAgain: leased work that fails (a Deliverer whose
// bus subscription was refused, say) is run again after a backoff instead
// of stopping the node's other work, and the node with it.
func TestFailedWorkIsTriedAgain(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	cfg := &config.Config{NodeID: "kefu-a"}
	cfg.Store.Driver = "postgres"
	n := &Node{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: newClaimStore(clock),
		leases: bridge.NewHeldLeases(), leaseTTL: testTTL, leaseClk: clock,
		workFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f"}, []string{"work"})}
	var mu sync.Mutex
	runs := 0
	running := make(chan struct{})
	work := leasedWork{name: "deliver.wa", run: func(ctx context.Context) error {
		mu.Lock()
		runs++
		first := runs == 1
		mu.Unlock()
		if first {
			return errors.New("deliver wa: subscribe: dial tcp 127.0.0.1:6379: connection refused")
		}
		close(running)
		<-ctx.Done()
		return nil
	}}
	other := leasedWork{name: "follow.wecom", run: func(ctx context.Context) error { <-ctx.Done(); return nil }}
	ctx, stop := context.WithCancel(context.Background())
	done, returned := make(chan error, 1), make(chan struct{})
	go func() { done <- n.runWork(ctx, []leasedWork{work, other}); close(returned) }()
	if !clock.WaitFor(clock.Now().Add(workRetryMin), returned) {
		t.Fatalf("the work was not tried again: runWork returned %v", <-done)
	}
	clock.Advance(workRetryMin)
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("runWork returned %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the work did not run again")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("runWork returned %v after the stop", err)
	}
	var m dto.Metric
	if err := n.workFailures.WithLabelValues("deliver.wa").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("kefu_leased_work_failures_total{work=\"deliver.wa\"} = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
}
