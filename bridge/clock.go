package bridge

import "time"

// Clock is the time source of the parts of the bridge that wait (the
// Deliverer's backoff timers and sweeps). Tests pass a fake one that they
// advance by hand, so no test sleeps through a backoff.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// At returns a channel that receives once the clock reaches t (at once
	// if it already has). It takes a deadline rather than a duration so that
	// a fake clock advanced between Now and At cannot make a timer late.
	At(t time.Time) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// At returns time.After(time.Until(t)).
func (RealClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }
