package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/fakeclock"
	"github.com/kefuhq/kefu/internal/wait"
)

// The decision flow, driven by hand: updates from a real core.Service on a
// real store go to Observe, the fake clock moves, and flush delivers what is
// due, so every test knows exactly what the Fallback has seen.

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

const (
	fallbackAfter = 5 * time.Second
	collapse      = 2 * time.Second
)

// recorder is a core.Notifier that keeps what the Service publishes.
type recorder struct {
	mu  sync.Mutex
	ups []core.Update
}

func (r *recorder) Publish(_ context.Context, ups ...core.Update) {
	r.mu.Lock()
	r.ups = append(r.ups, ups...)
	r.mu.Unlock()
}
func (r *recorder) Deliver(context.Context, core.OutboxEntry) {}

func (r *recorder) take() []core.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	ups := r.ups
	r.ups = nil
	return ups
}

// fakePusher records pushes and answers with scripted errors.
type fakePusher struct {
	mu     sync.Mutex
	pushed []Notification
	errs   []error // the next answers; nil = accepted
}

func (p *fakePusher) Push(_ context.Context, n Notification) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) > 0 {
		err := p.errs[0]
		p.errs = p.errs[1:]
		if err != nil {
			return err
		}
	}
	p.pushed = append(p.pushed, n)
	return nil
}

func (p *fakePusher) got() []Notification {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Notification(nil), p.pushed...)
}

type harness struct {
	t        *testing.T
	ctx      context.Context
	store    *sqlite.Store
	presence *core.MemoryPresence
	svc      *core.Service
	rec      *recorder
	clock    *fakeclock.Clock
	pusher   *fakePusher
	f        *Fallback
	metrics  *Metrics
	alice    core.Agent
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := &harness{t: t, ctx: ctx, store: st, presence: core.NewMemoryPresence(), rec: &recorder{},
		clock: fakeclock.New(t0), pusher: &fakePusher{}}
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, ReopenWithin: time.Hour},
		core.Deps{Store: st, Presence: h.presence, Notifier: h.rec, Now: h.clock.Now, Logger: quiet()})
	if h.alice, err = st.CreateAgent(ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, Active: true, PasswordHash: "x"}); err != nil {
		t.Fatal(err)
	}
	all, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = all.For("apns")
	h.use(h.pusher, nil)
	return h
}

// skipped is kefu_push_skipped_total{pusher="apns",reason}.
func (h *harness) skipped(reason string) float64 {
	h.t.Helper()
	var m dto.Metric
	if err := h.metrics.skips.WithLabelValues("apns", reason).Write(&m); err != nil {
		h.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// wantAcked checks that the pending push was cancelled by the
// acknowledgement itself (the Fallback's own decision), not by the stored
// status at send time.
func (h *harness) wantAcked() {
	h.t.Helper()
	if acked, seen := h.skipped("acked"), h.skipped("seen"); acked != 1 || seen != 0 {
		h.t.Errorf("skipped: acked %v, seen %v; want the acknowledgement to cancel the push (acked 1, seen 0)", acked, seen)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// observe passes everything the Service published to the Fallback.
func (h *harness) observe() {
	for _, u := range h.rec.take() {
		h.f.Observe(u)
	}
}

// pause waits for a retry's backoff in place (the harness has no slots).
func (h *harness) pause(at <-chan time.Time) bool {
	select {
	case <-at:
		return true
	case <-h.ctx.Done():
		return false
	}
}

// advance moves the clock and delivers what is due.
func (h *harness) advance(d time.Duration) {
	h.observe()
	h.clock.Advance(d)
	for _, e := range h.f.takeDue(h.clock.Now()) {
		h.f.deliver(h.ctx, e, h.pause)
	}
}

// conversation starts a conversation of visitor "u:42" on "web", assigned to
// Alice, and registers the visitor's device and Alice's.
func (h *harness) conversation() core.Conversation {
	h.t.Helper()
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:42", Name: "Zhang San",
		Message: core.Message{Kind: core.KindText, Text: "Where is my order?"}})
	if err != nil {
		h.t.Fatal(err)
	}
	// Alice takes it in her console: with a live socket, she is not
	// pushed for the message she took.
	release := h.presence.Connect(h.alice.ID)
	c, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	h.register(core.IdentityDevices("web", "u:42"), 1)
	h.register(core.AgentDevices(h.alice.ID), 2)
	h.observe()
	release()
	h.advance(fallbackAfter) // the first message's push to Alice, if any, is out of the way
	h.pusher.mu.Lock()
	h.pusher.pushed = nil
	h.pusher.mu.Unlock()
	return c
}

func token(n int) string { return fmt.Sprintf("%064x", n) }

func (h *harness) register(owner core.DeviceOwner, n int) {
	h.t.Helper()
	if _, err := h.store.RegisterDevice(h.ctx, core.Device{Token: token(n), Owner: owner}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) agentSays(c core.Conversation, text string) core.Message {
	h.t.Helper()
	m, err := h.svc.Reply(h.ctx, h.alice.ID, c.ID, core.Message{Kind: core.KindText, Text: text})
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) customerSays(text string) core.Message {
	h.t.Helper()
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:42", Message: core.Message{Kind: core.KindText, Text: text}})
	if err != nil {
		h.t.Fatal(err)
	}
	return in.Message
}

func (h *harness) wantPushes(n int) []Notification {
	h.t.Helper()
	got := h.pusher.got()
	if len(got) != n {
		h.t.Fatalf("%d pushes, want %d: %+v", len(got), n, got)
	}
	return got
}

func TestSocketClosedPushesWithinFallbackAfter(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	m := h.agentSays(c, "Found it!")
	h.advance(collapse - time.Millisecond)
	h.wantPushes(0)
	h.advance(time.Millisecond) // collapse ≤ fallback_after
	n := h.wantPushes(1)[0]
	if n.Device.Token != token(1) || n.Title != "Alice" || n.Body != "Found it!" || n.Badge != 1 ||
		n.ConversationID != c.ID || n.Seq != m.Seq || n.MessageID != m.ID || n.CollapseID() != fmt.Sprint(c.ID) {
		t.Errorf("notification %+v", n)
	}
	h.advance(time.Hour)
	h.wantPushes(1) // once
}

func TestSocketOpenAndAckedNoPush(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	release := h.presence.ConnectContact(c.ContactID)
	defer release()
	m := h.agentSays(c, "Found it!")
	h.advance(time.Second)
	// The app acknowledges what it received: a delivered receipt.
	if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgDelivered, ByContact: true}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	h.wantPushes(0)
	h.wantAcked()
}

func TestSocketOpenWithoutAckPushes(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	release := h.presence.ConnectContact(c.ContactID)
	defer release()
	m := h.agentSays(c, "Found it!")
	h.advance(fallbackAfter - time.Millisecond)
	h.wantPushes(0)
	h.advance(time.Millisecond)
	if n := h.wantPushes(1)[0]; n.Seq != m.Seq {
		t.Errorf("pushed seq %d, want %d", n.Seq, m.Seq)
	}
}

func TestAckBeforeDeadlineCancels(t *testing.T) {
	for _, tc := range []struct {
		name string
		ack  func(h *harness, c core.Conversation, m core.Message)
	}{
		{"status update", func(h *harness, _ core.Conversation, m core.Message) {
			if _, err := h.svc.UpdateStatus(h.ctx, core.StatusUpdate{MessageID: m.ID, Status: core.MsgDelivered}); err != nil {
				h.t.Fatal(err)
			}
		}},
		{"read receipt for a later seq", func(h *harness, c core.Conversation, m core.Message) {
			later := h.agentSays(c, "And here is the tracking number.")
			h.advance(time.Second)
			if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: later.Seq, Status: core.MsgRead, ByContact: true}); err != nil {
				h.t.Fatal(err)
			}
		}},
		{"the customer writes", func(h *harness, _ core.Conversation, _ core.Message) {
			h.customerSays("thanks")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.conversation()
			release := h.presence.ConnectContact(c.ContactID)
			defer release()
			m := h.agentSays(c, "Found it!")
			h.advance(time.Second)
			tc.ack(h, c, m)
			h.advance(time.Hour)
			for _, n := range h.pusher.got() {
				if n.Device.Token == token(1) {
					t.Fatalf("the customer was pushed to after acknowledging: %+v", n)
				}
			}
			h.wantAcked()
		})
	}
}

func TestPartialAckLeavesNewerMessage(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	release := h.presence.ConnectContact(c.ContactID)
	defer release()
	m1 := h.agentSays(c, "one")
	h.advance(time.Second)
	m2 := h.agentSays(c, "two")
	h.advance(time.Second)
	if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m1.Seq, Status: core.MsgDelivered, ByContact: true}); err != nil {
		t.Fatal(err)
	}
	h.advance(fallbackAfter - time.Millisecond) // m2 gets its own fallback_after from the ack
	h.wantPushes(0)
	h.advance(time.Millisecond)
	if n := h.wantPushes(1)[0]; n.Seq != m2.Seq {
		t.Errorf("pushed seq %d, want %d", n.Seq, m2.Seq)
	}
}

func TestSeenMessageIsNotPushed(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	m := h.agentSays(c, "Found it!")
	h.observe()
	// The receipt's update never reaches this Fallback (another node's bus
	// hiccup), but the store has it.
	if _, err := h.store.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgRead, ByContact: true}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	h.wantPushes(0)
}

func TestBurstCollapses(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	var last core.Message
	for i := range 20 { // 20 messages in a second
		last = h.agentSays(c, fmt.Sprintf("message %d", i+1))
		h.advance(50 * time.Millisecond)
	}
	h.advance(collapse)
	got := h.wantPushes(1)
	if n := got[0]; n.Seq != last.Seq || n.Body != "message 20" || n.Badge != 20 {
		t.Errorf("collapsed notification %+v, want the newest message and badge 20", n)
	}
	// A conversation gets at most one notification per window.
	h.agentSays(c, "one more")
	h.advance(time.Millisecond)
	h.wantPushes(1)
	h.advance(collapse)
	h.wantPushes(2)
}

func TestCustomerMessagePushesAssignee(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	m := h.customerSays("Hello? 你好")
	h.advance(collapse)
	got := h.wantPushes(1)
	if n := got[0]; n.Device.Token != token(2) || n.Title != "Zhang San" || n.Body != "Hello? 你好" || n.Seq != m.Seq || n.Badge != 2 {
		t.Errorf("notification %+v", n)
	}

	// With the console open, the console's delivered receipt cancels it.
	release := h.presence.Connect(h.alice.ID)
	defer release()
	m = h.customerSays("still there?")
	h.advance(time.Second)
	if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgDelivered}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	h.wantPushes(1)
}

func TestNoRecipientNoDeviceNoPush(t *testing.T) {
	h := newHarness(t)
	// Unassigned: nobody to push to.
	if _, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "a:1", Message: core.Message{Kind: core.KindText, Text: "hi"}}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	// Assigned, but the agent has no device.
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "a:2", Message: core.Message{Kind: core.KindText, Text: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.customerSays("again")
	h.agentSays(c, "hello") // the visitor a:2 has no device either
	h.advance(time.Hour)
	h.wantPushes(0)
}

func TestPushOutcomes(t *testing.T) {
	t.Run("gone removes the token", func(t *testing.T) {
		h := newHarness(t)
		c := h.conversation()
		h.pusher.errs = []error{fmt.Errorf("%w: 410 Unregistered", ErrGone)}
		h.agentSays(c, "Found it!")
		h.advance(collapse)
		h.wantPushes(0)
		ds, err := h.store.Devices(h.ctx, core.IdentityDevices("web", "u:42"))
		if err != nil || len(ds) != 0 {
			t.Fatalf("devices after 410: %v, %v", ds, err)
		}
	})
	t.Run("temporary refusal retried with backoff", func(t *testing.T) {
		h := newHarness(t)
		c := h.conversation()
		h.pusher.errs = []error{&RetryError{Err: errors.New("429")}, &RetryError{Err: errors.New("500")}}
		h.agentSays(c, "Found it!")
		h.observe()
		h.clock.Advance(collapse)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, e := range h.f.takeDue(h.clock.Now()) {
				h.f.deliver(h.ctx, e, h.pause)
			}
		}()
		for _, wait := range []time.Duration{DefaultBackoff, 2 * DefaultBackoff} {
			if !h.clock.WaitFor(h.clock.Now().Add(wait), done) {
				t.Fatal("no retry was scheduled")
			}
			h.clock.Advance(wait)
		}
		<-done
		h.wantPushes(1)
	})
	t.Run("provider auth failure makes Check fail until a push succeeds", func(t *testing.T) {
		h := newHarness(t)
		c := h.conversation()
		if err := h.f.Check(h.ctx); err != nil {
			t.Fatal(err)
		}
		h.pusher.errs = []error{fmt.Errorf("%w: 403 InvalidProviderToken", ErrProviderAuth)}
		h.agentSays(c, "one")
		h.advance(collapse)
		if err := h.f.Check(h.ctx); err == nil || !strings.Contains(err.Error(), "InvalidProviderToken") {
			t.Fatalf("Check = %v, want the provider's refusal", err)
		}
		h.agentSays(c, "two")
		h.advance(collapse)
		h.wantPushes(1)
		if err := h.f.Check(h.ctx); err != nil {
			t.Fatalf("Check after a successful push = %v", err)
		}
	})
}

func TestBody(t *testing.T) {
	long := strings.Repeat("é", MaxBody) // 2 bytes each
	for _, tc := range []struct {
		name string
		m    core.Message
		want string
	}{
		{"text", core.Message{Kind: core.KindText, Text: "hi"}, "hi"},
		{"image", core.Message{Kind: core.KindImage}, "[image]"},
		{"image with caption", core.Message{Kind: core.KindImage, Text: "the box"}, "[image] the box"},
		{"file", core.Message{Kind: core.KindFile}, "[file]"},
	} {
		if got := Body(tc.m); got != tc.want {
			t.Errorf("%s: Body = %q, want %q", tc.name, got, tc.want)
		}
	}
	got := Body(core.Message{Kind: core.KindText, Text: long})
	if len(got) > MaxBody || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("truncated body: %d bytes, %q…", len(got), got[:10])
	}
	for _, s := range []string{"abc", "日本語のテキスト", strings.Repeat("🙂", 300)} {
		for n := 4; n < 40; n++ {
			if got := truncate(s, n); len(got) > n && len(s) > n || !validUTF8(got) {
				t.Fatalf("truncate(%q, %d) = %q", s, n, got)
			}
		}
	}
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// tenure runs the Fallback's loop (Run without its subscription) on a
// channel the test feeds, as one lease tenure does.
type tenure struct {
	h        *harness
	msgs     chan *message.Message
	cancel   context.CancelFunc // a clean stop
	lose     context.CancelFunc // the lease lost (cause bridge.ErrLeaseTaken)
	err      error
	finished chan struct{} // closed when run has returned err
}

func (h *harness) startTenure() *tenure {
	ctx, cancel := context.WithCancelCause(h.ctx)
	tn := &tenure{h: h, msgs: make(chan *message.Message), finished: make(chan struct{}),
		cancel: func() { cancel(nil) }, lose: func() { cancel(bridge.ErrLeaseTaken) }}
	subscribed := make(chan struct{})
	go func() {
		tn.err = h.f.run(ctx, func(context.Context) (<-chan *message.Message, error) {
			close(subscribed)
			return tn.msgs, nil
		})
		close(tn.finished)
	}()
	// What the test commits from now on, the run gets on its channel (or
	// reads from the store).
	select {
	case <-subscribed:
	case <-tn.finished:
	}
	return tn
}

// feed hands what the Service published to the running loop, as the bus
// would.
func (tn *tenure) feed() {
	tn.h.t.Helper()
	ups := tn.h.rec.take()
	if len(ups) == 0 {
		return
	}
	msg, err := bridge.Encode(bridge.UpdatesEnvelope("n1", ups...), "")
	if err != nil {
		tn.h.t.Fatal(err)
	}
	tn.msgs <- msg
}

// stop ends the tenure (a clean stop or a lost lease), moves the clock by
// wait once the hand-over waits for it (0: not at all), and returns what
// run returned once it has.
func (tn *tenure) stop(wait time.Duration) error {
	tn.h.t.Helper()
	tn.cancel()
	if wait > 0 {
		if !tn.h.clock.WaitFor(tn.h.clock.Now().Add(wait), tn.finished) {
			tn.h.t.Fatal("the hand-over did not wait")
		}
		tn.h.clock.Advance(wait)
	}
	<-tn.finished
	return tn.err
}

// waitArmed returns once the loop waits for time t: it has observed what
// was fed.
func (tn *tenure) waitArmed(t time.Time) {
	tn.h.t.Helper()
	if !tn.h.clock.WaitFor(t, tn.finished) {
		tn.h.t.Fatal("the loop ended")
	}
}

func TestHandOverSendsPendingOnce(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	// Tenure 1: a reply for a customer without a socket waits for its
	// collapse window when the lease is lost.
	tn := h.startTenure()
	m := h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	if err := tn.stop(DefaultStopGrace / 2); err != nil { // due after the grace: sent at half of it
		t.Fatal(err)
	}
	// The next holder never saw that update: this node sent it on its way
	// out, within the grace.
	if n := h.wantPushes(1)[0]; n.MessageID != m.ID {
		t.Fatalf("pushed %+v at the hand-over, want message %d", n, m.ID)
	}

	// Tenure 2, later: nothing of tenure 1 is left to fire again.
	h.clock.Advance(time.Minute)
	tn = h.startTenure()
	h.customerSays("thanks, got it") // pushes Alice, not the customer
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(time.Hour)
	if err := tn.stop(0); err != nil { // nothing pending; the push in flight ends
		t.Fatal(err)
	}
	got := h.pusher.got()
	if len(got) != 2 || got[1].Device.Token != token(2) {
		t.Fatalf("pushes %+v, want the hand-over's and one to Alice", got)
	}
}

func TestHandOverWaitsForAcknowledgement(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	release := h.presence.ConnectContact(c.ContactID)
	defer release()
	tn := h.startTenure()
	m := h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(fallbackAfter))
	// The socket's receipt is stored, but its update never reaches this
	// loop (the stream stops): the hand-over checks the store before it
	// pushes.
	if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgDelivered, ByContact: true}); err != nil {
		t.Fatal(err)
	}
	if err := tn.stop(DefaultStopGrace / 2); err != nil {
		t.Fatal(err)
	}
	h.wantPushes(0)
	if seen := h.skipped("seen"); seen != 1 {
		t.Errorf("skipped seen %v, want 1", seen)
	}
}

// blockingPusher accepts nothing until its ctx ends.
type blockingPusher struct{ started chan struct{} }

func (p *blockingPusher) Push(ctx context.Context, _ Notification) error {
	p.started <- struct{}{}
	<-ctx.Done()
	return &RetryError{Err: ctx.Err()}
}

func TestHandOverBoundedByGrace(t *testing.T) {
	h := newHarness(t)
	bp := &blockingPusher{started: make(chan struct{}, 1)}
	h.use(bp, func(c *Config) { c.StopGrace = 3 * time.Second })
	c := h.conversation() // the first message's push to Alice waited for no Run
	tn := h.startTenure()
	h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	stopAt := h.clock.Now()
	tn.cancel()
	if !h.clock.WaitFor(stopAt.Add(1500*time.Millisecond), tn.finished) {
		t.Fatal("the hand-over does not wait")
	}
	h.clock.Advance(1500 * time.Millisecond) // half the grace: the push starts
	select {
	case <-bp.started:
	case <-tn.finished:
		t.Fatal("run returned without pushing")
	}
	select {
	case <-tn.finished:
		t.Fatalf("run returned %v before the grace ended", tn.err)
	default:
	}
	if !h.clock.WaitFor(stopAt.Add(3*time.Second), tn.finished) {
		t.Fatal("no grace deadline")
	}
	h.clock.Advance(1500 * time.Millisecond) // the grace is over: the push is cancelled
	<-tn.finished
	if tn.err != nil {
		t.Fatal(tn.err)
	}
}

func TestRunOnceAtATime(t *testing.T) {
	h := newHarness(t)
	h.f.cfg.Bus = memory.New(quiet())
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- h.f.Run(ctx) }()
	for !h.f.running.Load() {
		runtime.Gosched()
	}
	if err := h.f.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second Run = %v, want an error", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := h.f.Run(ctx); err != nil { // ended at once: ctx is done
		t.Errorf("Run after the first returned = %v", err)
	}
}

// pusherFunc is a Pusher from a function.
type pusherFunc func(context.Context, Notification) error

func (p pusherFunc) Push(ctx context.Context, n Notification) error { return p(ctx, n) }

func TestGoneRemovesOnlyThePushedRegistration(t *testing.T) {
	h := newHarness(t)
	other := core.IdentityDevices("web", "u:43")
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		if n.Device.Owner != core.IdentityDevices("web", "u:42") {
			return nil
		}
		// While the push is on its way, the phone changes users: the
		// token now belongs to u:43, whose registration is valid.
		if _, err := h.store.RegisterDevice(ctx, core.Device{Token: n.Device.Token, Owner: other}); err != nil {
			return err
		}
		return fmt.Errorf("%w: 400 DeviceTokenNotForTopic", ErrGone)
	}), nil)
	c := h.conversation()
	h.agentSays(c, "Found it!")
	h.advance(collapse)
	ds, err := h.store.Devices(h.ctx, other)
	if err != nil || len(ds) != 1 || ds[0].Token != token(1) {
		t.Fatalf("u:43's devices after the gone answer for u:42's registration: %v, %v", ds, err)
	}
}

func TestGoneKeepsARegistrationMadeDuringThePush(t *testing.T) {
	h := newHarness(t)
	owner := core.IdentityDevices("web", "u:42")
	h.use(pusherFunc(func(ctx context.Context, n Notification) error {
		// While the push is on its way, the app registers its token
		// again (it was reinstalled, say); the provider's refusal is of
		// the registration that was pushed, with no date.
		d := n.Device
		d.UpdatedAt = d.UpdatedAt.Add(time.Second)
		if _, err := h.store.RegisterDevice(ctx, d); err != nil {
			return err
		}
		return fmt.Errorf("%w: 410 Unregistered", ErrGone)
	}), nil)
	c := h.conversation()
	h.agentSays(c, "Found it!")
	h.advance(collapse)
	ds, err := h.store.Devices(h.ctx, owner)
	if err != nil || len(ds) != 1 || ds[0].Token != token(1) {
		t.Fatalf("devices after the gone answer for the earlier registration: %v, %v", ds, err)
	}
}

// withCursor gives h's Fallback a cursor in the store (Config.Cursor), and
// p as its Pusher unless nil.
func (h *harness) withCursor(p ...Pusher) {
	h.t.Helper()
	var pusher Pusher = h.pusher
	if len(p) > 0 {
		pusher = p[0]
	}
	h.use(pusher, func(c *Config) { c.Cursor = "push.test.cursor" })
}

// use gives h a new Fallback with pusher p and the harness's config, as
// edit changes it (nil: unchanged).
func (h *harness) use(p Pusher, edit func(*Config)) {
	h.t.Helper()
	cfg := Config{Pusher: p, Store: h.store, Presence: h.presence, FallbackAfter: fallbackAfter,
		Collapse: collapse, Clock: h.clock, Logger: quiet(), Metrics: h.metrics}
	if edit != nil {
		edit(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.f = f
}

func (h *harness) cursor() string {
	h.t.Helper()
	v, err := h.store.Setting(h.ctx, "push.test.cursor")
	if err != nil && !errors.Is(err, core.ErrNotFound) {
		h.t.Fatal(err)
	}
	return v
}

// With a cursor, a clean stop leaves the pushes waiting to the next run,
// which catches up on them and on messages committed while no run was
// going (between two lease tenures); what a run pushed is not pushed
// again, and a message older than CatchUp is not pushed at all.
func TestNextRunCatchesUpOnWhatNoRunSaw(t *testing.T) {
	h := newHarness(t)
	h.withCursor()
	c := h.conversation()
	m1 := h.stopWithAPushWaiting(c)

	// The next run pushes it, and runs until its cursor has passed it.
	h.clock.Advance(collapse) // fires the stopped run's timer, for nobody
	tn := h.startTenure()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the caught-up push", func() bool { return len(h.pusher.got()) == 1 })
	waitFor(t, "the cursor past it", func() bool { return h.cursor() == fmt.Sprint(m1.ID) })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}

	// Nobody runs: another customer's question to Alice, which gets stale,
	// and a fresh reply go by unseen.
	old, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:43", Message: core.Message{Kind: core.KindText, Text: "Hello?"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Take(h.ctx, h.alice.ID, old.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(DefaultCatchUp + time.Minute)
	m3 := h.agentSays(c, "Still there?")
	h.rec.take()

	tn = h.startTenure()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the second caught-up push", func() bool { return len(h.pusher.got()) == 2 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	got := h.wantPushes(2)
	if got[0].MessageID != m1.ID || got[1].MessageID != m3.ID {
		t.Fatalf("pushed %d then %d, want %d then %d", got[0].MessageID, got[1].MessageID, m1.ID, m3.ID)
	}
}

// stopWithAPushWaiting runs a tenure in which an agent's reply to c waits
// for its push, stops it cleanly, checks that nothing was pushed and that
// the cursor stays below the reply, and returns the reply.
func (h *harness) stopWithAPushWaiting(c core.Conversation) core.Message {
	h.t.Helper()
	tn := h.startTenure()
	m := h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	if err := tn.stop(0); err != nil {
		h.t.Fatal(err)
	}
	h.wantPushes(0)
	if got := h.cursor(); got != fmt.Sprint(m.ID-1) {
		h.t.Fatalf("cursor after a clean stop with a push waiting: %q, want %d", got, m.ID-1)
	}
	return m
}

// failingFeed fails the next fails Feed calls, as a store does for a moment
// during a failover.
type failingFeed struct {
	core.Store
	fails atomic.Int32
}

func (s *failingFeed) Feed(ctx context.Context, after int64, n int) ([]core.Message, error) {
	if s.fails.Add(-1) >= 0 {
		return nil, errors.New("connection reset by peer")
	}
	return s.Store.Feed(ctx, after, n)
}

// A run whose catch-up fails stops with the error (to be tried again)
// rather than going on live, which would move the cursor past what it did
// not read: the next run pushes what no run saw.
func TestFailedCatchUpFailsTheRun(t *testing.T) {
	h := newHarness(t)
	feed := &failingFeed{Store: h.store}
	h.use(h.pusher, func(c *Config) { c.Cursor = "push.test.cursor"; c.Store = feed })
	c := h.conversation()
	h.stopWithAPushWaiting(c)
	h.clock.Advance(collapse) // fires the stopped run's timer, for nobody

	// Nobody runs: Alice answers the offline customer.
	m := h.agentSays(c, "Your parcel is at the door")
	h.rec.take()
	// The next run's catch-up read fails once.
	feed.fails.Store(1)
	tn := h.startTenure()
	select {
	case <-tn.finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the run went on after its catch-up failed")
	}
	if tn.err == nil {
		t.Fatal("the run whose catch-up failed returned no error")
	}
	// The run after it catches up.
	tn = h.startTenure()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the caught-up push", func() bool { return len(h.pusher.got()) == 1 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	// One push for the conversation side, of its newest message.
	if got := h.wantPushes(1); got[0].MessageID != m.ID {
		t.Fatalf("pushed message %d, want %d", got[0].MessageID, m.ID)
	}
}

// A cursor that is not a message id (edited by hand, say) does not stop
// pushes for good: the run starts from the log's end and saves a new one.
func TestUnreadableCursorStartsAfresh(t *testing.T) {
	h := newHarness(t)
	if err := h.store.PutSetting(h.ctx, "push.test.cursor", "garbage"); err != nil {
		t.Fatal(err)
	}
	h.withCursor()
	c := h.conversation()
	tn := h.startTenure()
	waitFor(t, "a new cursor", func() bool { _, err := strconv.ParseInt(h.cursor(), 10, 64); return err == nil })
	h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the push", func() bool { return len(h.pusher.got()) == 1 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
}

// While a push waits, the saved cursor stays below its message, so that a
// run after a crash still pushes it; once it is out, the cursor moves on.
func TestCursorStaysBelowWaitingPushes(t *testing.T) {
	h := newHarness(t)
	h.withCursor()
	c := h.conversation()
	tn := h.startTenure()
	m1 := h.agentSays(c, "Found it!")
	tn.feed()
	waitFor(t, "the cursor below the waiting push", func() bool { return h.cursor() == fmt.Sprint(m1.ID-1) })
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the push", func() bool { return len(h.pusher.got()) == 1 })

	// The next update, a second later, moves the cursor past it.
	h.clock.Advance(saveEvery)
	m2 := h.customerSays("thanks")
	tn.feed()
	waitFor(t, "the cursor below the push to Alice", func() bool { return h.cursor() == fmt.Sprint(m2.ID-1) })
	if err := tn.stop(0); err != nil { // the push to Alice is left to the next run
		t.Fatal(err)
	}
	if h.cursor() != fmt.Sprint(m2.ID-1) {
		t.Fatalf("cursor after the stop %q, want %d", h.cursor(), m2.ID-1)
	}
}

var waitFor = wait.For

// pushUnderWay runs a tenure with a cursor and a pusher that blocks, and
// returns once the push of an agent's message to the visitor is under way.
func (h *harness) pushUnderWay() (*tenure, core.Message) {
	h.t.Helper()
	bp := &blockingPusher{started: make(chan struct{}, 1)}
	h.withCursor(bp)
	c := h.conversation()
	tn := h.startTenure()
	m := h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	<-bp.started
	return tn, m
}

// A push under way keeps the cursor below its message (a crash then still
// pushes it from the next holder), like one waiting.
func TestCursorStaysBelowAPushUnderWay(t *testing.T) {
	h := newHarness(t)
	tn, m1 := h.pushUnderWay()
	time.Sleep(3 * saveEvery) // the cursor's ticker runs, with nothing waiting but m1 under way
	if got := h.cursor(); got != fmt.Sprint(m1.ID-1) {
		t.Fatalf("cursor %q while m1's push is under way, want %d", got, m1.ID-1)
	}
	tn.cancel()
	if !h.clock.WaitFor(h.clock.Now().Add(DefaultStopGrace), tn.finished) {
		t.Fatal("no grace deadline")
	}
	h.clock.Advance(DefaultStopGrace) // the push is cut off: the next run pushes it
	<-tn.finished
	if got := h.cursor(); got != fmt.Sprint(m1.ID-1) {
		t.Fatalf("cursor %q after m1's push was cut off, want %d", got, m1.ID-1)
	}
}

// A run that lost its lease sends nothing more, cuts off its pushes under
// way at once (another node may hold the lease already) and saves no
// cursor: the next holder catches up on them and pushes them once.
func TestLostLeaseSavesNoCursor(t *testing.T) {
	h := newHarness(t)
	tn, m1 := h.pushUnderWay()
	waitFor(t, "the cursor below the push under way", func() bool { return h.cursor() == fmt.Sprint(m1.ID-1) })
	tn.lose()
	select { // at once: the fake clock does not move, so no grace can end
	case <-tn.finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the run that lost its lease waits for its pushes under way")
	}
	if tn.err != nil {
		t.Fatal(tn.err)
	}
	if got := h.cursor(); got != fmt.Sprint(m1.ID-1) {
		t.Fatalf("cursor %q after the lease was lost, want it left at %d", got, m1.ID-1)
	}

	// The next holder (another node) pushes it, once.
	h.clock.Advance(collapse) // fires the stopped run's timer, for nobody
	h.withCursor()
	tn = h.startTenure()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the next holder's push", func() bool { return len(h.pusher.got()) == 1 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if got := h.wantPushes(1)[0]; got.MessageID != m1.ID {
		t.Fatalf("the next holder pushed %+v, want message %d", got, m1.ID)
	}
}

// firstRecent skips, by probing, the messages after a stale cursor that
// are older than the catch-up's age.
func TestFirstRecentSkipsOldMessages(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	var lastOld core.Message
	for i := range 37 {
		lastOld = h.agentSays(c, fmt.Sprint("old ", i))
	}
	h.clock.Advance(DefaultCatchUp + time.Minute)
	oldest := h.clock.Now().Add(-DefaultCatchUp)
	first := h.agentSays(c, "new")
	h.agentSays(c, "newer")
	for _, after := range []int64{0, 1, lastOld.ID - 20, lastOld.ID - 1} {
		got, err := h.f.firstRecent(h.ctx, after, oldest)
		if err != nil {
			t.Fatal(err)
		}
		if ms, _ := h.store.Feed(h.ctx, got, 1); len(ms) != 1 || ms[0].ID != first.ID {
			t.Errorf("from %d: firstRecent %d, whose next message is %+v; want %d", after, got, ms, first.ID)
		}
	}
	if got, _ := h.f.firstRecent(h.ctx, first.ID, oldest); got != first.ID {
		t.Errorf("from a recent cursor: %d, want it kept (%d)", got, first.ID)
	}
}

// A refusal of kefu's credentials counts only while the run that met it
// goes on: the node that stops pushing is ready again, and its
// kefu_push_unhealthy is 0 (the next holder finds out for itself).
func TestStoppedRunForgetsARefusal(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	h.pusher.errs = []error{fmt.Errorf("%w: 403 InvalidProviderToken", ErrProviderAuth)}
	tn := h.startTenure()
	h.agentSays(c, "Found it!")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the refused push", func() bool { return h.f.Check(h.ctx) != nil })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if err := h.f.Check(h.ctx); err != nil {
		t.Errorf("Check after the run: %v", err)
	}
	var m dto.Metric
	if err := h.metrics.unhealthy.WithLabelValues("apns").Write(&m); err != nil || m.GetGauge().GetValue() != 0 {
		t.Errorf("kefu_push_unhealthy after the run: %v, %v", m.GetGauge().GetValue(), err)
	}
}

// Each pusher has its own health: one refused, the other's stays 0, and
// the other's recovery does not clear it.
func TestMetricsByPusher(t *testing.T) {
	all, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a, b := all.For("apns"), all.For("apns_beta")
	a.setUnhealthy(true)
	b.setUnhealthy(false)
	b.skipped("acked")
	value := func(name string) float64 {
		var m dto.Metric
		if err := all.unhealthy.WithLabelValues(name).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	if value("apns") != 1 || value("apns_beta") != 0 {
		t.Fatalf("unhealthy: apns %v, apns_beta %v; want 1 and 0", value("apns"), value("apns_beta"))
	}
	var m dto.Metric
	if err := all.skips.WithLabelValues("apns", "acked").Write(&m); err != nil || m.GetCounter().GetValue() != 0 {
		t.Fatalf("apns_beta's skip counted for apns: %v", m.GetCounter().GetValue())
	}
}

// TestGoneBeforeTheRegistrationKeepsIt: APNs's 410 says when it last found
// the token invalid; a registration made after that (the app registered
// the token again) is newer than the refusal and stays. One made before
// it is removed.
func TestGoneBeforeTheRegistrationKeepsIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		since   time.Duration // the refusal's time, from the registration's
		removed bool
	}{
		{"refused before it registered again", -time.Hour, false},
		{"refused in the same second", 0, true},
		{"refused after", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.use(pusherFunc(func(ctx context.Context, n Notification) error {
				if n.Device.Owner != core.IdentityDevices("web", "u:42") {
					return nil
				}
				return &GoneError{Since: n.Device.UpdatedAt.Add(tc.since).Truncate(time.Second), Err: errors.New("410 Unregistered")}
			}), nil)
			c := h.conversation()
			h.agentSays(c, "Found it!")
			h.advance(collapse)
			ds, err := h.store.Devices(h.ctx, core.IdentityDevices("web", "u:42"))
			if err != nil {
				t.Fatal(err)
			}
			if removed := len(ds) == 0; removed != tc.removed {
				t.Errorf("devices after the 410: %v; want removed %v", ds, tc.removed)
			}
		})
	}
}

// A message whose update never reaches the run (its publish was lost, and
// nothing came after it) is found in the store and pushed all the same.
func TestLostPublishIsStillPushed(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	tn := h.startTenure()
	m := h.agentSays(c, "Found it!")
	h.rec.take() // its publish is lost
	timeout := make(chan struct{})
	time.AfterFunc(10*time.Second, func() { close(timeout) })
	if !h.clock.WaitFor(h.clock.Now().Add(collapse), timeout) {
		t.Fatal("the message whose update was lost was never observed")
	}
	h.clock.Advance(collapse)
	waitFor(t, "the push", func() bool { return len(h.pusher.got()) == 1 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if got := h.wantPushes(1)[0]; got.MessageID != m.ID {
		t.Fatalf("pushed message %d, want %d", got.MessageID, m.ID)
	}
}

// A clean stop leaves the cursor below a push still waiting; the next run
// catches up from there, and pushes the waiting one but not again one that
// went out above the cursor (the list saved beside it).
func TestHandOverDoesNotPushAgain(t *testing.T) {
	h := newHarness(t)
	h.withCursor()
	c := h.conversation()
	c2 := h.otherConversation()
	release := h.presence.ConnectContact(c.ContactID)
	defer release()
	tn := h.startTenure()
	m1 := h.agentSays(c, "Found it!") // u:42 has a socket: waits fallback_after
	m2 := h.agentSays(c2, "Hello")    // u:b has none: waits the collapse window
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	h.clock.Advance(collapse)
	waitFor(t, "the push to u:b", func() bool { return len(h.pusher.got()) == 1 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if got := h.cursor(); got != fmt.Sprint(m1.ID-1) {
		t.Fatalf("cursor after a clean stop with a push waiting: %q, want %d", got, m1.ID-1)
	}
	h.clock.Advance(fallbackAfter - collapse) // fires the stopped run's timer, for nobody

	tn = h.startTenure()
	tn.waitArmed(h.clock.Now().Add(fallbackAfter))
	h.clock.Advance(fallbackAfter)
	waitFor(t, "the caught-up push", func() bool { return len(h.pusher.got()) >= 2 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	got := h.wantPushes(2)
	if got[0].MessageID != m2.ID || got[1].MessageID != m1.ID {
		t.Fatalf("pushed %d then %d, want %d then %d", got[0].MessageID, got[1].MessageID, m2.ID, m1.ID)
	}
	if got := h.cursor(); got != fmt.Sprint(m2.ID) {
		t.Errorf("cursor after both went out: %q, want %d", got, m2.ID)
	}
}

// Without a cursor, a run that stops while its sequencer holds a message
// (an update before it is late) reads it from the store and hands it over
// with the rest: no next run would.
func TestHandOverReadsWhatTheSequencerHolds(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	tn := h.startTenure()
	h.agentSays(c, "Found it!")
	h.rec.take() // late: its update has not come
	m2 := h.agentSays(c, "It is at the door")
	tn.feed() // held behind the gap
	if err := tn.stop(DefaultStopGrace / 2); err != nil {
		t.Fatal(err)
	}
	if got := h.wantPushes(1)[0]; got.MessageID != m2.ID {
		t.Fatalf("pushed message %d at the hand-over, want %d", got.MessageID, m2.ID)
	}
}

// A message whose update never came and that the store shows older than
// CatchUp by the time it is read is not pushed, as in a catch-up.
func TestStaleMessageReadFromTheStoreIsNotPushed(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	tn := h.startTenure()
	h.agentSays(c, "Found it!")
	h.rec.take() // its publish is lost
	h.clock.Advance(DefaultCatchUp + time.Minute)
	time.Sleep(bridge.ProbeEvery + bridge.ResequenceWait + 500*time.Millisecond) // the probe reads it
	h.f.mu.Lock()
	pending := len(h.f.pending)
	h.f.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d pushes waiting for a message older than the catch-up's age", pending)
	}
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	h.wantPushes(0)
}
