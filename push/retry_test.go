package push

import (
	"context"
	"errors"
	"fmt"
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
	h.use(p, nil)
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
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // the first attempt stalls
			return ctx.Err()
		}
		return nil
	}), func(c *Config) { c.AttemptTimeout = 20 * time.Millisecond })
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

// TestWaitingPushTakesTheNewerMessage: while APNs leaves every worker's
// push unanswered, a conversation whose pushes keep falling due keeps one
// waiting push, carrying its newest message, not one per collapse window
// (goroutines and entries piling up for as long as APNs is silent).
func TestWaitingPushTakesTheNewerMessage(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var pushed []Notification
	blocked := make(chan struct{}, 1)
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		if n.Device.Token == token(1) {
			blocked <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		pushed = append(pushed, n)
		mu.Unlock()
		return nil
	}), func(c *Config) { c.Workers = 1 })
	slow := h.conversation() // u:42, device token(1): its push holds the only worker
	other := h.otherConversation()

	tn := h.startTenure()
	h.agentSays(slow, "for the phone APNs does not answer")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	<-blocked
	var last core.Message
	for i := range 3 {
		last = h.agentSays(other, fmt.Sprint("update ", i))
		tn.feed()
		tn.waitArmed(h.clock.Now().Add(collapse))
		h.clock.Advance(collapse) // due: waits for the worker
		wait.For(t, "the push to wait for the worker", func() bool {
			h.f.mu.Lock()
			defer h.f.mu.Unlock()
			j := h.f.queued[key{other.ID, toContact}]
			return j != nil && j.e.msg.ID == last.ID
		})
	}
	close(release)
	wait.For(t, "the waiting push", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pushed) >= 2
	})
	if err := tn.stop(DefaultStopGrace); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var forOther []int64
	for _, n := range pushed {
		if n.ConversationID == other.ID {
			forOther = append(forOther, n.MessageID)
		}
	}
	if len(forOther) != 1 || forOther[0] != last.ID {
		t.Errorf("conversation %d was pushed messages %v, want only its newest, %d", other.ID, forOther, last.ID)
	}
	if s := h.skipped("superseded"); s != 2 {
		t.Errorf("skipped superseded %v, want 2", s)
	}
}

// TestOvertakenRetryIsDropped: a push backing off after a temporary refusal
// is dropped once a newer push for its conversation waits: retried after
// it, the older message would be the last alert on the device.
func TestOvertakenRetryIsDropped(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	var mu sync.Mutex
	var pushed []Notification
	refused := false
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		switch n.Device.Token {
		case token(1):
			blocked <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		case token(3):
			mu.Lock()
			first := !refused
			refused = true
			mu.Unlock()
			if first {
				return &RetryError{Err: errors.New("429 TooManyRequests")}
			}
		}
		mu.Lock()
		pushed = append(pushed, n)
		mu.Unlock()
		return nil
	}), func(c *Config) { c.Backoff = 10 * time.Second; c.Workers = 1 })
	slow := h.conversation() // u:42, device token(1)
	other := h.otherConversation()

	tn := h.startTenure()
	t0 := h.clock.Now()
	h.agentSays(other, "first")
	tn.feed()
	tn.waitArmed(t0.Add(collapse))
	h.clock.Advance(collapse) // refused: backs off until t0+collapse+10s
	if !h.clock.WaitFor(t0.Add(collapse+10*time.Second), tn.finished) {
		t.Fatal("no backoff")
	}
	h.agentSays(slow, "for the phone APNs does not answer")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	<-blocked // the only worker is busy
	newer := h.agentSays(other, "second")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	wait.For(t, "the newer push to wait for the worker", func() bool {
		h.f.mu.Lock()
		defer h.f.mu.Unlock()
		return h.f.queued[key{other.ID, toContact}] != nil
	})
	h.clock.Advance(10 * time.Second) // the first's backoff ends
	wait.For(t, "the overtaken retry to be dropped", func() bool { return h.skipped("superseded") == 1 })
	close(release)
	wait.For(t, "the newer push", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pushed) == 2
	})
	if err := tn.stop(DefaultStopGrace); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := pushed[1]; n.MessageID != newer.ID {
		t.Errorf("pushed %+v, want the newer message %d", n, newer.ID)
	}
}

// TestOvertakenRetryIsDroppedAfterTheNewerWent: with workers free, the
// newer push goes out at once while the older one backs off; the older
// one's retry must not follow it, or the device is left showing the older
// message.
func TestOvertakenRetryIsDroppedAfterTheNewerWent(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var pushed []Notification
	refused := false
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		mu.Lock()
		defer mu.Unlock()
		if n.Device.Token == token(1) && !refused {
			refused = true
			return &RetryError{Err: errors.New("429 TooManyRequests")}
		}
		pushed = append(pushed, n)
		return nil
	}), func(c *Config) { c.Backoff = 10 * time.Second })
	c := h.conversation()
	h.rec.take()
	tn := h.startTenure()
	t0 := h.clock.Now()
	h.agentSays(c, "first")
	tn.feed()
	tn.waitArmed(t0.Add(collapse))
	h.clock.Advance(collapse) // refused: backs off for 10 s
	if !h.clock.WaitFor(t0.Add(collapse+10*time.Second), tn.finished) {
		t.Fatal("no backoff")
	}
	newer := h.agentSays(c, "second")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	wait.For(t, "the newer push", func() bool { mu.Lock(); defer mu.Unlock(); return len(pushed) == 1 })
	h.clock.Advance(10 * time.Second) // the older one's backoff ends
	wait.For(t, "the older retry to be dropped or sent", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pushed) > 1 || h.skipped("superseded") > 0
	})
	if err := tn.stop(DefaultStopGrace); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushed) != 1 || pushed[0].MessageID != newer.ID {
		var ids []int64
		for _, n := range pushed {
			ids = append(ids, n.MessageID)
		}
		t.Errorf("pushed messages %v, want only the newer %d", ids, newer.ID)
	}
}

// otherConversation starts a second conversation, of visitor "u:b" with
// device token(3), taken by Alice, and forgets what it published.
func (h *harness) otherConversation() core.Conversation {
	h.t.Helper()
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:b", Message: core.Message{Kind: core.KindText, Text: "hi"}})
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	h.register(core.IdentityDevices("web", "u:b"), 3)
	h.rec.take()
	return c
}
