package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/bridge"
)

// Cluster leases.
//
// Work that must run on one node of a cluster at a time runs under a lease
// in the store (bridge.RunLeased), held by the node's node_id:
//
//	deliver.NAME  the outbox delivery of channel instance NAME (sweeps and sends)
//	run.NAME      a channel's exclusive loop (channels.Exclusive: Telegram
//	              polling, Slack Socket Mode)
//	follow.NAME   an agent-side channel's follower (Slack threads, Work
//	              WeChat notifications)
//
// On SQLite the sole node always gets them. On PostgreSQL, nodes share the
// leases: a node's lease lapses LeaseTTL after it died, and is released at
// once when it stops cleanly.
//
// Because the node_id is the holder, two running nodes with the same
// node_id would both believe they hold every lease. On a shared store a
// node therefore first claims its node_id with the lease node.NODE_ID,
// held by this process alone: if another process holds it, the node waits
// for it to lapse (a restart after a crash) and, when it does not, stops
// with an error naming the node_id. The node serves requests meanwhile;
// only its leased work waits for the claim.
//
// The claim is renewed like any lease, and the leased work runs inside it:
// when the claim is lost (the store unreachable for 2/3 of the TTL), every
// piece of leased work stops and releases its lease, and starts again
// only once the claim is renewed. A claim that lapsed and was taken by
// another process meanwhile (one started with the same node_id while this
// one could not reach the store) is fatal: the node stops with the same
// error, since the other process now holds every lease under this
// node_id.

// leasedWork is one piece of work run under the lease name.
type leasedWork struct {
	name string
	run  func(ctx context.Context) error
}

// initLeases sets the lease TTL and exports kefu_lease_held.
func (n *Node) initLeases(opt Options) error {
	n.leaseTTL = opt.LeaseTTL
	if n.leaseTTL == 0 {
		n.leaseTTL = bridge.DefaultLeaseTTL
	}
	if n.leaseTTL < bridge.MinLeaseTTL {
		return fmt.Errorf("node: lease TTL %v is below the minimum %v", n.leaseTTL, bridge.MinLeaseTTL)
	}
	n.leases = bridge.NewHeldLeases()
	n.workFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kefu_leased_work_failures_total",
		Help: "Times a piece of leased work (deliver.CHANNEL, follow.CHANNEL, push.NAME…) failed and was tried again after a backoff.",
	}, []string{"work"})
	return errors.Join(n.reg.Register(n.leases), n.reg.Register(n.workFailures))
}

// Leases returns the names of the cluster leases this node holds now,
// sorted: the work it runs for the cluster.
func (n *Node) Leases() []string { return n.leases.Names() }

// runLeased starts work in g, each under its lease, once the node_id is
// claimed (on a shared store), and for as long as the claim is held. The
// node_id is claimed even with no work (a cluster serving only the web
// channel): a second process with the same node_id would otherwise run
// beside the first and take its place in presence. It returns at once.
func (n *Node) runLeased(ctx context.Context, g *errgroup.Group, work []leasedWork) {
	shared := n.cfg.Store.Driver == "postgres"
	if len(work) == 0 && !shared {
		return
	}
	g.Go(func() error {
		if !shared {
			return n.runWork(ctx, work)
		}
		name := "node." + n.cfg.NodeID
		instance, err := n.claimNodeID(ctx, name)
		if err != nil || instance == "" {
			return err
		}
		err = bridge.RunLeased(ctx, n.leaseConfig(name, instance, true), func(ctx context.Context) error {
			if len(work) == 0 {
				<-ctx.Done() // the claim is held for as long as the node runs
				return nil
			}
			return n.runWork(ctx, work)
		})
		if errors.Is(err, bridge.ErrLeaseTaken) {
			return n.nodeIDInUse(name)
		}
		return err
	})
}

// runWork runs each piece of work under its lease until ctx ends (it then
// returns nil once all have stopped). A piece that fails (the bus briefly
// unreachable as it subscribes, say) has released its lease when it
// returns: it is tried again after a backoff, here or on the node that
// takes the lease first, rather than stopping this node and every
// connection it serves.
func (n *Node) runWork(ctx context.Context, work []leasedWork) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, w := range work {
		g.Go(func() error { return n.runRetrying(ctx, w) })
	}
	return g.Wait()
}

// Backoff of leased work that failed: doubling from workRetryMin to
// workRetryMax, and back to workRetryMin after a run that lasted
// workRetryMax.
const (
	workRetryMin = time.Second
	workRetryMax = time.Minute
)

// runRetrying runs w under its lease until ctx ends or w returns nil,
// trying it again when it fails.
func (n *Node) runRetrying(ctx context.Context, w leasedWork) error {
	cfg := n.leaseConfig(w.name, n.cfg.NodeID, false)
	if err := cfg.Validate(); err != nil {
		return err
	}
	var clock bridge.Clock = bridge.RealClock{}
	if n.leaseClk != nil {
		clock = n.leaseClk
	}
	backoff := workRetryMin
	for {
		start := clock.Now()
		err := bridge.RunLeased(ctx, cfg, w.run)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if clock.Now().Sub(start) >= workRetryMax {
			backoff = workRetryMin
		}
		if n.workFailures != nil {
			n.workFailures.WithLabelValues(w.name).Inc()
		}
		n.log.Error("leased work failed; trying again", "work", w.name, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-clock.At(clock.Now().Add(backoff)):
		}
		backoff = min(2*backoff, workRetryMax)
	}
}

func (n *Node) leaseConfig(name, holder string, claim bool) bridge.LeaseConfig {
	return bridge.LeaseConfig{Store: n.store, Name: name, Holder: holder, TTL: n.leaseTTL, Clock: n.leaseClk,
		Logger: n.log, Held: n.leases, FailIfTaken: claim}
}

// nodeIDInUse is the error of a node whose node_id another process holds.
func (n *Node) nodeIDInUse(name string) error {
	return fmt.Errorf("node_id %q is in use by another running kefu node (it holds the lease %q "+
		"in the store): give every node a node_id of its own", n.cfg.NodeID, name)
}

// claimNodeID takes the lease name for this process and returns the holder
// it took it as. It waits up to a TTL and a bit for a crashed predecessor's
// claim to lapse; a claim still held after that belongs to a running node
// with the same node_id, which is an error. It returns "" and nil when ctx
// ends first.
func (n *Node) claimNodeID(ctx context.Context, name string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("node: claim node_id: %w", err)
	}
	host, _ := os.Hostname()
	instance := fmt.Sprintf("%s/%s/%d/%s", n.cfg.NodeID, host, os.Getpid(), hex.EncodeToString(b))
	clock := n.leaseClk
	if clock == nil {
		clock = bridge.RealClock{}
	}
	every := n.leaseTTL / 3
	deadline := clock.Now().Add(n.leaseTTL + every)
	warned := false
	for {
		actx, cancel := context.WithTimeout(ctx, every)
		ok, err := n.store.AcquireLease(actx, name, instance, n.leaseTTL)
		cancel()
		switch {
		case ctx.Err() != nil:
			return "", nil
		case ok:
			if warned {
				n.log.Info("node_id claimed", "node_id", n.cfg.NodeID)
			}
			return instance, nil
		case err != nil:
			n.log.Warn("node_id: cannot reach the store to claim it; will try again", "in", every, "err", err)
		case !clock.Now().Before(deadline):
			return "", n.nodeIDInUse(name)
		case !warned:
			warned = true
			n.log.Warn("node_id is held by another process: waiting for its claim to lapse (the previous run of "+
				"this node was killed) before running cluster work; if it does not lapse, another node has the "+
				"same node_id", "node_id", n.cfg.NodeID, "up_to", n.leaseTTL+every)
		}
		select {
		case <-ctx.Done():
			return "", nil
		case <-clock.At(clock.Now().Add(every)):
		}
	}
}
