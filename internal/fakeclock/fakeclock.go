// Package fakeclock is a clock for tests that moves only when told to. It
// implements bridge.Clock (Now and At), so code that waits through a Clock
// can be tested without sleeping.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a fake clock. The zero value is not usable; call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan struct{} // closed and replaced whenever a timer is set
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock showing start.
func New(start time.Time) *Clock {
	return &Clock{now: start, added: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At returns a channel that receives once the clock reaches t (at once if
// it already has).
func (c *Clock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: t, ch: ch})
	close(c.added)
	c.added = make(chan struct{})
	return ch
}

// Advance moves the clock forward by d and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// Pending returns how many timers wait for a time not yet reached.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// WaitFor blocks until a timer is pending for a time at or before t, or
// until done is closed (it then returns false). Tests use it to advance the
// clock only once the code under test is waiting on it.
func (c *Clock) WaitFor(t time.Time, done <-chan struct{}) bool {
	for {
		c.mu.Lock()
		for _, w := range c.waiters {
			if !w.at.After(t) {
				c.mu.Unlock()
				return true
			}
		}
		added := c.added
		c.mu.Unlock()
		select {
		case <-added:
		case <-done:
			return false
		}
	}
}
