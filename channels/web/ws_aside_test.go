package web

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// goroutineID reads the running goroutine's id from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return string(bytes.Fields(buf)[1])
}

// TestAsidePoolReusesItsGoroutines: a call made while every goroutine is
// busy runs at once on a new one, and a goroutine whose call has returned
// waits for the next instead of ending.
func TestAsidePoolReusesItsGoroutines(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	p := newAsidePool(stop)

	ids := make(chan string, 4)
	release := make(chan struct{})
	p.run(func() { ids <- goroutineID(); <-release })
	first := <-ids

	// The first goroutine is busy: the next call may not wait for it.
	p.run(func() { ids <- goroutineID() })
	select {
	case id := <-ids:
		if id == first {
			t.Fatalf("a call ran on the busy goroutine %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call waited for a busy goroutine")
	}

	// Once its call returns, a goroutine waits for the next one.
	close(release)
	for range 2 {
		select {
		case p.work <- func() {}: // only an idle pool goroutine receives
		case <-time.After(10 * time.Second):
			t.Fatal("no goroutine waited for a call after its own")
		}
	}
}
