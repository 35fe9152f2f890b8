package wecom

import (
	"context"
	"errors"
	"sync"
	"time"
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
