package web

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/kefuhq/kefu/internal/wait"
)

// goroutineID reads the running goroutine's id from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return string(bytes.Fields(buf)[1])
}

func (p *asidePool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// lastIdle is the goroutine the next call goes to (nil: none idle).
func (p *asidePool) lastIdle() *asideWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	return p.idle[len(p.idle)-1]
}

// TestAsidePool: a call made while every goroutine is busy runs at once on
// a new one; a goroutine whose call has returned serves the next, the most
// recently idle first; and under a steady trickle of calls the goroutines
// a burst started end, down to what the trickle needs.
func TestAsidePool(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	p := newAsidePool(stop)
	p.idleFor = 300 * time.Millisecond

	ids := make(chan string, 8)
	release := make(chan struct{})
	for range 3 {
		p.run(func() { ids <- goroutineID(); <-release })
	}
	started := map[string]bool{}
	for range 3 {
		select {
		case id := <-ids:
			started[id] = true
		case <-time.After(wait.Timeout):
			t.Fatal("a call waited for a busy goroutine")
		}
	}
	if len(started) != 3 {
		t.Fatalf("three calls at once ran on %d goroutines", len(started))
	}
	close(release)
	wait.For(t, "the three goroutines idle", func() bool { return p.idleCount() == 3 })

	// One call at a time: each goes to the goroutine the one before ran
	// on, and the two others, never used, end.
	var last string
	deadline := time.Now().Add(wait.Timeout)
	for p.idleCount() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still idle under one call at a time", p.idleCount())
		}
		w := p.lastIdle()
		p.run(func() { ids <- goroutineID() })
		id := <-ids
		if !started[id] {
			t.Fatalf("a call ran on a new goroutine with %d idle", p.idleCount())
		}
		if last != "" && id != last {
			t.Fatalf("a call ran on %s, not on %s, which was idle last", id, last)
		}
		last = id
		wait.For(t, "the goroutine idle again", func() bool { return p.lastIdle() == w })
		time.Sleep(20 * time.Millisecond)
	}
}
