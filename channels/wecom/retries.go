package wecom

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kefuhq/kefu/core"
)

// retryWindow is how long this node remembers a callback it handled: Work
// WeChat sends a callback again when it has no answer within 5 seconds,
// three times over.
const retryWindow = 5 * time.Minute

// handleBudget bounds the handling of one callback, which goes on when
// Work WeChat hangs up (at 5 s) so that its retry finds it done. It stays
// well inside the node's shutdown timeout, which waits for it.
const handleBudget = 10 * time.Second

// errUnfinished is the outcome of a handling that never returned (it
// panicked): a retry runs it again.
var errUnfinished = errors.New("wecom: the callback's handling did not finish")

// maxRemembered bounds the callbacks remembered (about 55 a second over
// retryWindow); past it the oldest are forgotten early.
const maxRemembered = 1 << 14

// callbacks remembers, by MsgId, the callbacks this node is handling or has
// handled in the last retryWindow, so that Work WeChat's retry of one (the
// answer took over 5 s, or was lost on the way) gets the first's outcome
// instead of carrying out a command, and sending its answer, again.
// Replies need it less (the store keeps a reply once, by MsgId), commands
// need it: /take, /close, /transfer and /list answer the member every time.
type callbacks struct {
	mu    sync.Mutex
	byID  map[string]*callback
	queue []remembered // in arrival order
}

// callback is one handling of a MsgId.
type callback struct {
	done chan struct{} // closed when err is set
	err  error
}

type remembered struct {
	id    string
	cb    *callback
	until time.Time
}

// failed reports whether cb has ended with an error.
func (cb *callback) failed() bool {
	select {
	case <-cb.done:
		return cb.err != nil
	default:
		return false
	}
}

// do runs handle for the callback with MsgId id, unless this node has
// handled it: a retry of one under way waits for its outcome (or ctx), a
// retry of one that succeeded returns nil at once, and a retry of one that
// failed runs handle again. id "" always runs handle.
func (cs *callbacks) do(ctx context.Context, id string, now time.Time, handle func() error) error {
	if id == "" {
		return handle()
	}
	for {
		cs.mu.Lock()
		cb := cs.byID[id]
		if cb == nil || cb.failed() {
			cb = &callback{done: make(chan struct{})}
			cs.remember(id, cb, now)
			cs.mu.Unlock()
			defer close(cb.done)
			cb.err = errUnfinished // until handle returns: a panic leaves it failed
			cb.err = handle()
			return cb.err
		}
		cs.mu.Unlock()
		select {
		case <-cb.done:
			if cb.err == nil {
				return nil
			}
			// It failed: this retry runs it, unless another got there first.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// remember records cb as id's handling, forgetting what has expired or is
// over the bound (cs.mu held).
func (cs *callbacks) remember(id string, cb *callback, now time.Time) {
	if cs.byID == nil {
		cs.byID = make(map[string]*callback)
	}
	for len(cs.queue) > 0 && (len(cs.queue) >= maxRemembered || now.After(cs.queue[0].until)) {
		if old := cs.queue[0]; cs.byID[old.id] == old.cb {
			delete(cs.byID, old.id)
		}
		cs.queue[0] = remembered{}
		cs.queue = cs.queue[1:]
	}
	cs.byID[id] = cb
	cs.queue = append(cs.queue, remembered{id: id, cb: cb, until: now.Add(retryWindow)})
}

// claimPrefix begins the store settings by which the nodes of a cluster
// claim a callback: "wecom.NAME.cb.MSGID".
func (c *Channel) claimPrefix() string { return "wecom." + c.name + ".cb." }

// claimPoll is how often a retry that found another node handling its
// callback reads the claim again.
const claimPoll = 50 * time.Millisecond

// claimWait bounds how long a retry waits for another node's handling of
// its callback: Work WeChat stops waiting for an answer at 5 seconds, and
// asks again later.
const claimWait = 5 * time.Second

// claimWriteBudget bounds the writes that end a claim (done, or released).
const claimWriteBudget = 5 * time.Second

// errClaimBusy answers a retry whose callback another node is still
// handling when claimWait runs out: Work WeChat tries again.
var errClaimBusy = errors.New("wecom: another node is handling this callback")

// clusterOnce runs handle for callback id unless another node of the
// cluster has handled it, or is handling it: behind a load balancer, Work
// WeChat's retry may reach another node than the first try, whose memory
// (callbacks) it does not share. On one node (no shared bus) that memory
// is enough and nothing is written.
//
// The claim is a store setting, under claimPrefix: "run TOKEN UNIXNANO"
// while a node runs it, "done UNIXNANO" after. A failed (or panicked) run
// removes its claim, so that the next retry runs it again; a run whose
// node died is taken over once it is handleBudget old (by this node's
// clock). A retry of one being run reads the claim until it ends, for at
// most claimWait, then answers errClaimBusy. Store errors are the
// callback's (Work WeChat retries). id "" always runs handle.
func (c *Channel) clusterOnce(ctx context.Context, id string, handle func() error) error {
	if id == "" || !c.clustered {
		return handle()
	}
	c.pruneSoon()
	key := c.claimPrefix() + id
	wctx, cancel := context.WithTimeout(ctx, claimWait)
	defer cancel()
	mine := ""
	for mine == "" {
		claim := fmt.Sprintf("run %s %d", c.claimToken, c.now().UnixNano())
		got, err := c.store.EnsureSetting(wctx, key, claim)
		if err != nil {
			return err
		}
		for got != claim {
			state, at := parseClaim(got)
			switch {
			case state == "done":
				return nil // another node handled it
			case c.now().Sub(at) >= handleBudget: // its node stopped before the end: take it over
				ok, err := c.store.ReplaceSetting(wctx, key, got, claim)
				if err != nil {
					return err
				}
				if ok {
					got = claim
					continue
				}
			default: // being handled by another node: wait for its outcome
				select {
				case <-wctx.Done():
					return errors.Join(errClaimBusy, wctx.Err())
				case <-time.After(claimPoll):
				}
			}
			if got, err = c.store.Setting(wctx, key); errors.Is(err, core.ErrNotFound) {
				break // released (its run failed): claim it
			} else if err != nil {
				return err
			}
		}
		if got == claim {
			mine = claim
		}
	}
	// However the run ends, the claim ends with it, within its own budget.
	end := func(done bool) {
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimWriteBudget)
		defer cancel()
		if done {
			if _, err := c.store.ReplaceSetting(ectx, key, mine, fmt.Sprintf("done %d", c.now().UnixNano())); err != nil {
				c.log.Warn("wecom: could not mark a callback handled; another node may handle its retry again", "msgid", id, "err", err)
			}
			return
		}
		// Not done: the next retry, on any node, runs it again.
		if _, err := c.store.DeleteSetting(ectx, key, mine); err != nil {
			c.log.Warn("wecom: could not release a failed callback's claim; a retry waits for it to age", "msgid", id, "err", err)
		}
	}
	finished := false
	defer func() {
		if !finished { // panicked
			end(false)
		}
	}()
	err := handle()
	finished = true
	end(err == nil)
	return err
}

// parseClaim reads a claim's state ("run" or "done") and time; a value it
// cannot read is an old "run" (taken over).
func parseClaim(v string) (state string, at time.Time) {
	f := strings.Fields(v)
	if len(f) < 2 {
		return "run", time.Time{}
	}
	ns, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		return "run", time.Time{}
	}
	return f[0], time.Unix(0, ns)
}

// pruneEvery is how often a node removes the claims older than
// retryWindow (Work WeChat retries for less).
const pruneEvery = time.Minute

// pruneBudget bounds one pruning pass.
const pruneBudget = time.Minute

// pruneSoon starts a pruning pass in the background, at most once every
// pruneEvery on this node: it is no callback's work.
func (c *Channel) pruneSoon() {
	now := c.now().UnixNano()
	last := c.prunedAt.Load()
	if now-last < int64(pruneEvery) || !c.prunedAt.CompareAndSwap(last, now) {
		return
	}
	c.pruneMu.Lock()
	defer c.pruneMu.Unlock()
	if c.pruneClosed || c.pruneCtx == nil {
		return
	}
	c.pruning.Go(func() {
		ctx, cancel := context.WithTimeout(c.pruneCtx, pruneBudget)
		defer cancel()
		c.pruneClaims(ctx)
	})
}

// pruneClaims removes the claims past retryWindow, a page at a time. A
// failure is logged and left to the next pass.
func (c *Channel) pruneClaims(ctx context.Context) {
	now := c.now()
	prefix := c.claimPrefix()
	for after := ""; ; {
		page, err := c.store.Settings(ctx, prefix, after, 500)
		if err != nil {
			c.log.Warn("wecom: pruning old callback claims", "err", err)
			return
		}
		for _, s := range page {
			if _, at := parseClaim(s.Value); now.Sub(at) > retryWindow {
				if _, err := c.store.DeleteSetting(ctx, s.Key, s.Value); err != nil {
					c.log.Warn("wecom: pruning old callback claims", "err", err)
					return
				}
			}
		}
		if len(page) < 500 {
			return
		}
		after = page[len(page)-1].Key
	}
}
