package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/core"
)

// DefaultLeaseTTL is LeaseConfig.TTL's default: a node that dies without
// releasing its leases (kill -9, a lost machine) has its work taken over
// after at most this long (plus LeaseTTL/3 until another node tries again).
const DefaultLeaseTTL = 15 * time.Second

// MinLeaseTTL is the shortest LeaseConfig.TTL: below it renewals would
// hammer the store.
const MinLeaseTTL = 100 * time.Millisecond

// ErrLeaseLost is the cause (context.Cause) of the cancellation of
// RunLeased's fn when the lease was lost: a renewal found another holder,
// or none succeeded for 2T/3. Work that tells it apart from a clean stop
// (the caller's ctx ended, and the lease is still renewed while fn
// returns) must stop at once: another node may take the lease over T/3
// later. The Deliverer then cancels its sends in flight without a grace
// period.
var ErrLeaseLost = errors.New("lease lost")

// ErrLeaseTaken is ErrLeaseLost when another holder was seen with the
// lease. With LeaseConfig.FailIfTaken, RunLeased returns an error wrapping
// it.
var ErrLeaseTaken = fmt.Errorf("%w: another holder has it", ErrLeaseLost)

// LeaseConfig configures RunLeased.
type LeaseConfig struct {
	// Store keeps the lease; every core.Store is a core.LeaseStore.
	// Required.
	Store core.LeaseStore
	// Name is the lease's name, the same on every node for the same work
	// ("deliver.wa", "run.tg", "follow.slack"). Required.
	Name string
	// Holder names this node in the store: its node_id. Two running nodes
	// must never share one (both would think they hold the lease). Required.
	Holder string
	// TTL is how long the lease lasts unless renewed, and so how long work
	// waits to move after its node died. Default DefaultLeaseTTL; at least
	// MinLeaseTTL.
	TTL time.Duration
	// Clock times the attempts and renewals. nil: RealClock.
	Clock Clock
	// Logger. nil: slog.Default().
	Logger *slog.Logger
	// Held, when set, records whether this node holds the lease (the
	// node's kefu_lease_held gauge). nil: not recorded.
	Held *HeldLeases
	// FailIfTaken makes RunLeased return an error wrapping ErrLeaseTaken
	// (once fn has returned) when an attempt or a renewal finds the lease
	// held by another holder, instead of waiting for its turn. It suits a
	// lease whose holder names one process, such as a node's claim on its
	// node_id: another holder there is a second process with the same
	// node_id, not a node that will hand the work back.
	FailIfTaken bool
}

// Validate reports every problem with c at once.
func (c LeaseConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("Store is nil"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("Name is empty"))
	}
	if c.Holder == "" {
		errs = append(errs, errors.New("Holder is empty"))
	}
	if c.TTL != 0 && c.TTL < MinLeaseTTL {
		errs = append(errs, fmt.Errorf("TTL %v is below the minimum %v", c.TTL, MinLeaseTTL))
	}
	return errors.Join(errs...)
}

func (c *LeaseConfig) setDefaults() {
	if c.TTL == 0 {
		c.TTL = DefaultLeaseTTL
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// RunLeased runs fn on one node of the cluster at a time: while this node
// (cfg.Holder) holds the lease cfg.Name in cfg.Store. It returns when ctx
// ends, or when fn returns on its own.
//
// Timing, with T = cfg.TTL:
//   - Not holding the lease, it tries to take it at once and then every
//     T/3.
//   - Holding it, it runs fn and renews the lease every T/3 (sooner after
//     a failed renewal). Each store call is bounded by T/3.
//   - fn's ctx is cancelled when a renewal finds that another node holds
//     the lease, or when no renewal has succeeded for 2T/3 (the store is
//     unreachable), with the cause ErrLeaseLost (ErrLeaseTaken in the first
//     case): fn then has T/3 to return before the lease can expire and
//     another node start the same work. fn must return promptly when its
//     ctx ends, and must not give work in flight a grace period when the
//     cause is ErrLeaseLost. After fn has returned, RunLeased releases the
//     lease and goes back to trying to take it, so fn may be called again:
//     it must be safe to call more than once (build a fresh Deliverer or
//     Follower inside it). With cfg.FailIfTaken, RunLeased instead returns
//     an error wrapping ErrLeaseTaken when it finds another holder, while
//     trying or renewing.
//   - When ctx ends, fn's ctx ends with it; once fn has returned, the
//     lease is released, with a context of its own, so that another node
//     takes the work over at its next attempt (within T/3) instead of
//     waiting for the lease to expire. RunLeased then returns fn's error.
//   - When fn returns on its own while the lease is held, the lease is
//     released and RunLeased returns fn's error: the work is done, or has
//     failed (the caller decides what that means, as it would without a
//     lease).
//
// The node logs once when it takes the lease and once when it loses it.
// An error is returned at once, without running fn, for a bad cfg.
func RunLeased(ctx context.Context, cfg LeaseConfig, fn func(ctx context.Context) error) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bridge.RunLeased: %w", err)
	}
	if fn == nil {
		return errors.New("bridge.RunLeased: fn is nil")
	}
	cfg.setDefaults()
	l := &leaseRun{
		cfg:   cfg,
		log:   cfg.Logger.With("lease", cfg.Name, "holder", cfg.Holder),
		clock: cfg.Clock,
		every: cfg.TTL / 3,
	}
	l.cfg.Held.set(cfg.Name, false) // known to this node, not held yet
	failing := false
	for {
		start := l.clock.Now()
		actx, cancel := context.WithTimeout(ctx, l.every)
		ok, err := cfg.Store.AcquireLease(actx, cfg.Name, cfg.Holder, cfg.TTL)
		cancel()
		if ctx.Err() != nil {
			// The attempt may have taken the lease just before ctx ended.
			l.release(ctx)
			return nil
		}
		switch {
		case err != nil:
			if !failing {
				l.log.Warn("lease: cannot reach the store; will try again", "in", l.every, "err", err)
			} else {
				l.log.Debug("lease: cannot reach the store", "err", err)
			}
			failing = true
		case ok:
			failing = false
			if done, err := l.hold(ctx, start, fn); done {
				return err
			}
			start = l.clock.Now()
		case cfg.FailIfTaken:
			l.log.Error("lease: held by another holder; giving up")
			return fmt.Errorf("lease %s: %w", cfg.Name, ErrLeaseTaken)
		default:
			if failing {
				l.log.Info("lease: the store answers again")
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.clock.At(start.Add(l.every)):
		}
	}
}

// leaseRun is one RunLeased call.
type leaseRun struct {
	cfg   LeaseConfig
	log   *slog.Logger
	clock Clock
	every time.Duration // T/3: between attempts and renewals
}

// renewal is the outcome of one renewal attempt that started at at.
type renewal struct {
	ok  bool
	err error
	at  time.Time
}

// hold runs fn while the lease, taken by an attempt that started at start,
// is held. It reports done (RunLeased returns err) unless fn was stopped
// because the lease was lost, in which case the caller tries again; with
// FailIfTaken a lease lost to another holder is done, with ErrLeaseTaken.
func (l *leaseRun) hold(ctx context.Context, start time.Time, fn func(context.Context) error) (done bool, err error) {
	l.log.Info("lease: acquired; running the work here")
	l.cfg.Held.set(l.cfg.Name, true)
	defer l.cfg.Held.set(l.cfg.Name, false)

	fctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	result := make(chan error, 1)
	go func() { result <- fn(fctx) }()

	stopAfter := 2 * l.every
	var (
		confirmed  = start                 // start of the last attempt that found the lease ours
		nextRenew  = start.Add(l.every)    // when to renew next
		renewed    = make(chan renewal, 1) // the renewal in flight reports here
		renewing   bool
		lost       bool
		tick       <-chan time.Time
		tickAt     time.Time
		deadline   = l.clock.At(confirmed.Add(stopAfter))
		deadlineAt = confirmed
	)
	var lostTo error // why the lease was lost: the cause of fctx's end
	lose := func(cause error, why string, args ...any) {
		lost, lostTo = true, cause
		l.cfg.Held.set(l.cfg.Name, false)
		l.log.Warn("lease: lost; stopping the work here ("+why+")", args...)
		stop(cause)
	}
	for {
		switch {
		case lost:
			tick, deadline = nil, nil
		default:
			if !renewing && (tick == nil || !tickAt.Equal(nextRenew)) {
				tick, tickAt = l.clock.At(nextRenew), nextRenew
			}
			if !deadlineAt.Equal(confirmed) {
				deadline, deadlineAt = l.clock.At(confirmed.Add(stopAfter)), confirmed
			}
		}
		select {
		case err := <-result:
			if renewing {
				<-renewed // let it land before the release below
			}
			l.release(ctx)
			if lost {
				if l.cfg.FailIfTaken && errors.Is(lostTo, ErrLeaseTaken) {
					return true, fmt.Errorf("lease %s: %w", l.cfg.Name, ErrLeaseTaken)
				}
				return false, nil
			}
			l.log.Info("lease: released")
			return true, err
		case <-tick:
			tick, renewing = nil, true
			at := l.clock.Now()
			go func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.every)
				defer cancel()
				ok, err := l.cfg.Store.AcquireLease(rctx, l.cfg.Name, l.cfg.Holder, l.cfg.TTL)
				renewed <- renewal{ok: ok, err: err, at: at}
			}()
		case r := <-renewed:
			renewing = false
			switch {
			case lost:
			case r.err == nil && r.ok:
				if r.at.After(confirmed) {
					confirmed = r.at
				}
				nextRenew = r.at.Add(l.every)
			case r.err == nil:
				lose(ErrLeaseTaken, "another node holds it")
			default:
				// Try again sooner: two or three more attempts fit before
				// the deadline.
				nextRenew = l.clock.Now().Add(l.every / 3)
				l.log.Warn("lease: renewal failed; will try again", "in", l.every/3, "err", r.err)
			}
		case <-deadline:
			lose(ErrLeaseLost, "not renewed for "+stopAfter.String()+": the store is unreachable", "since", confirmed)
		}
	}
}

// release frees the lease if this node holds it, with a context that
// outlives ctx (it runs when ctx has ended) but is bounded by T/3.
func (l *leaseRun) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.every)
	defer cancel()
	if err := l.cfg.Store.ReleaseLease(rctx, l.cfg.Name, l.cfg.Holder); err != nil {
		l.log.Warn("lease: release failed; another node takes over when it expires", "err", err)
	}
}

// HeldLeases records which leases a node holds, for /metrics (the gauge
// kefu_lease_held{name}: 1 while held, 0 for a lease this node runs work
// under but does not hold) and for tests. It is safe for concurrent use;
// a nil *HeldLeases records nothing.
type HeldLeases struct {
	mu   sync.Mutex
	held map[string]bool
	desc *prometheus.Desc
}

// NewHeldLeases returns an empty set.
func NewHeldLeases() *HeldLeases {
	return &HeldLeases{
		held: map[string]bool{},
		desc: prometheus.NewDesc("kefu_lease_held",
			"1 while this node holds the cluster lease (and runs its work), 0 while another node does.",
			[]string{"name"}, nil),
	}
}

func (h *HeldLeases) set(name string, held bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.held[name] = held
	h.mu.Unlock()
}

// Held reports whether the lease called name is held.
func (h *HeldLeases) Held(name string) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[name]
}

// Names returns the names of the leases held, sorted.
func (h *HeldLeases) Names() []string {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for name, held := range h.held {
		if held {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Describe implements prometheus.Collector.
func (h *HeldLeases) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *HeldLeases) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, held := range h.held {
		v := 0.0
		if held {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(h.desc, prometheus.GaugeValue, v, name)
	}
}

var _ prometheus.Collector = (*HeldLeases)(nil)
