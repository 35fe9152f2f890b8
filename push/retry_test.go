package push

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
)

// TestThrottledDevicesHoldNoWorker: APNs throttles per device token. Four
// throttled phones, each pushed again after a backoff, must not hold every
// worker (DefaultWorkers) through it: another conversation's push goes out
// after its collapse window.
func TestThrottledDevicesHoldNoWorker(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	pushedAt := map[string]time.Time{}
	throttled := map[string]bool{}
	p := pusherFunc(func(_ context.Context, n Notification) error {
		mu.Lock()
		defer mu.Unlock()
		if throttled[n.Device.Token] {
			return &RetryError{Err: context.DeadlineExceeded}
		}
		if _, ok := pushedAt[n.Device.Token]; !ok {
			pushedAt[n.Device.Token] = h.clock.Now()
		}
		return nil
	})
	var err error
	h.f, err = New(Config{Pusher: p, Store: h.store, Presence: h.presence, FallbackAfter: fallbackAfter,
		Collapse: collapse, Clock: h.clock, Logger: quiet(), Metrics: h.metrics})
	if err != nil {
		t.Fatal(err)
	}
	var convs []core.Conversation
	for i := range DefaultWorkers + 1 {
		ext := "u:" + string(rune('a'+i))
		in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: ext, Message: core.Message{Kind: core.KindText, Text: "hi"}})
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.register(core.IdentityDevices("web", ext), 100+i)
		if i < DefaultWorkers {
			throttled[token(100+i)] = true
		}
		convs = append(convs, c)
	}
	h.rec.take()
	tn := h.startTenure()
	for _, c := range convs[:DefaultWorkers] {
		h.agentSays(c, "for a throttled phone")
	}
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse) // the throttled pushes start, are refused, back off
	if !h.clock.WaitFor(h.clock.Now().Add(time.Second), tn.finished) {
		t.Fatal("no backoff")
	}
	t1 := h.clock.Now()
	h.agentSays(convs[DefaultWorkers], "for a healthy phone")
	tn.feed()
	tn.waitArmed(t1.Add(collapse))
	for range 100 { // 10 s in small steps, well inside the throttled ones' backoff
		h.clock.Advance(100 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	at, ok := pushedAt[token(100+DefaultWorkers)]
	mu.Unlock()
	if err := tn.stop(DefaultStopGrace); err != nil { // the throttled ones still back off
		t.Fatal(err)
	}
	if !ok || at.Sub(t1) > 2*collapse {
		t.Fatalf("the healthy phone was pushed at %v (pushed: %v), %v after its message; want within %v: the throttled pushes' backoff held the workers",
			at, ok, at.Sub(t1), 2*collapse)
	}
}

// TestTimedOutAttemptIsRetried: a provider that stops answering makes an
// attempt run out of AttemptTimeout; that is a network failure, retried,
// not a refusal that drops the push.
func TestTimedOutAttemptIsRetried(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int32
	var err error
	h.f, err = New(Config{Pusher: pusherFunc(func(ctx context.Context, n Notification) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // the first attempt stalls
			return ctx.Err()
		}
		return nil
	}), Store: h.store, Presence: h.presence, FallbackAfter: fallbackAfter, Collapse: collapse,
		Clock: h.clock, Logger: quiet(), Metrics: h.metrics, AttemptTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := h.conversation()
	calls.Store(0)
	h.agentSays(c, "Found it!")
	done := make(chan struct{})
	go func() { defer close(done); h.advance(collapse) }() // delivers, and waits out the retry's backoff
	wait.For(t, "a second attempt", func() bool {
		h.clock.Advance(100 * time.Millisecond)
		return calls.Load() >= 2
	})
	<-done
}
