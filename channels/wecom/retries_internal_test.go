package wecom

import (
	"context"
	"testing"
	"time"
)

// TestPanickedHandlingRunsAgain: a handling that panicked (net/http
// recovers it and drops the connection) is not remembered as done: Work
// WeChat's retry runs it.
func TestPanickedHandlingRunsAgain(t *testing.T) {
	var cs callbacks
	now := time.Now()
	func() {
		defer func() { _ = recover() }()
		_ = cs.do(context.Background(), "42", now, func() error { panic("a bug") })
	}()
	ran := false
	if err := cs.do(context.Background(), "42", now, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("the retry: ran %v, err %v; want it run", ran, err)
	}
	ran = false
	if err := cs.do(context.Background(), "42", now, func() error { ran = true; return nil }); err != nil || ran {
		t.Fatalf("a retry after the success: ran %v, err %v; want it answered without running", ran, err)
	}
}
