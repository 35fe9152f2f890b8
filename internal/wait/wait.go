// Package wait holds the tests' bounded wait for a condition that another
// goroutine makes true (a delivery, a follower's cursor, a push).
package wait

import (
	"testing"
	"time"
)

// Timeout is how long For waits before it fails the test.
const Timeout = 15 * time.Second

// For polls cond every few milliseconds until it holds, and fails t,
// naming what it waited for, if it has not after Timeout.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
