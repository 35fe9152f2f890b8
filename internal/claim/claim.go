// Package claim decides, once, who owns a piece of queued work: the worker
// that is about to run it, or the caller that gives up waiting for it.
// The stores' writers use it so that a caller is told ctx.Err() only for a
// write that will never run, and waits for the outcome of one that has.
package claim

import "sync/atomic"

// Claim is a queued item's owner, decided once. The zero value is queued.
type Claim struct{ state atomic.Int32 }

const (
	queued = iota
	started
	abandoned
)

// Start claims the item for the worker: false if the caller gave up on it
// first, and then it must not run.
func (c *Claim) Start() bool { return c.state.CompareAndSwap(queued, started) }

// Abandon claims the item for a caller giving up: false if the worker has
// started it, and then its outcome is the caller's answer.
func (c *Claim) Abandon() bool { return c.state.CompareAndSwap(queued, abandoned) }
