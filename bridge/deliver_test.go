package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

const channel = "wa"

// fakeSender is a bridge.Sender with failure knobs.
type fakeSender struct {
	clock *fakeClock

	mu       sync.Mutex
	attempts []sendAttempt
	// script: the results of an entry's successive attempts; once it runs
	// out, attempts succeed.
	script map[int64][]error
	// scriptText is script for the entries of messages with a text, for
	// entries whose ID is not known before they can be sent.
	scriptText map[string][]error
	// gates make Send wait (a slow provider) until the gate is closed, or
	// until ctx ends when honourCtx is set.
	gates     map[int64]chan struct{}
	honourCtx bool
	panicOn   map[int64]bool
	jitter    bool // yield or sleep a little in each Send, to mix up goroutines
	inflight  map[string]int
	overlaps  int // a key sent twice at once
}

type sendAttempt struct {
	entry int64
	key   string
	at    time.Time // fake time at the start of Send
	// budget is the time ctx left the Send at its start (real time).
	budget time.Duration
	out    bridge.Outgoing
	err    error
}

func newFakeSender(clock *fakeClock) *fakeSender {
	return &fakeSender{clock: clock, script: map[int64][]error{}, scriptText: map[string][]error{}, gates: map[int64]chan struct{}{},
		panicOn: map[int64]bool{}, inflight: map[string]int{}}
}

func (f *fakeSender) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	id, key := out.Entry.ID, out.Entry.Key
	f.mu.Lock()
	f.inflight[key]++
	if f.inflight[key] > 1 {
		f.overlaps++
	}
	n := 0
	for _, a := range f.attempts {
		if a.entry == id {
			n++
		}
	}
	var err error
	s, ok := f.script[id]
	if !ok && out.Message != nil {
		s = f.scriptText[out.Message.Text]
	}
	if n < len(s) {
		err = s[n]
	}
	gate, honour, panics, jitter := f.gates[id], f.honourCtx, f.panicOn[id], f.jitter
	if panics {
		delete(f.panicOn, id)
	}
	var budget time.Duration
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	f.attempts = append(f.attempts, sendAttempt{entry: id, key: key, at: f.clock.Now(), budget: budget, out: out, err: err})
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight[key]--
		f.mu.Unlock()
	}()

	if jitter {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	}
	if gate != nil {
		if honour {
			select {
			case <-gate:
			case <-ctx.Done():
				return bridge.SendResult{}, ctx.Err()
			}
		} else {
			<-gate
		}
	}
	if panics {
		panic("sender bug")
	}
	if err != nil {
		return bridge.SendResult{}, err
	}
	return bridge.SendResult{ExternalID: fmt.Sprintf("ext-%d", id)}, nil
}

func (f *fakeSender) fail(id int64, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[id] = errs
}

// failText is fail for the entries of messages with text.
func (f *fakeSender) failText(text string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scriptText[text] = errs
}

func (f *fakeSender) gate(id int64) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gates[id] = g
	return g
}

func (f *fakeSender) attemptsOf(id int64) []sendAttempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sendAttempt
	for _, a := range f.attempts {
		if a.entry == id {
			out = append(out, a)
		}
	}
	return out
}

// sent returns, per key, the entries whose attempt succeeded, in order.
func (f *fakeSender) sent() map[string][]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]int64{}
	for _, a := range f.attempts {
		if a.err == nil {
			out[a.key] = append(out[a.key], a.entry)
		}
	}
	return out
}

// harness runs a Deliverer for channel "wa" on a memory bus, with a fake
// clock, store and sender.
type harness struct {
	t       *testing.T
	clock   *fakeClock
	store   *fakeStore
	sender  *fakeSender
	notify  *recordingNotifier
	bus     *memory.Bus
	kicker  *bridge.Notifier
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	end     context.CancelCauseFunc // ends Run's ctx with a cause
	done    chan error
	stopped bool
}

func newHarness(t *testing.T) *harness {
	clock := newFakeClock()
	return &harness{t: t, clock: clock, store: newFakeStore(), sender: newFakeSender(clock),
		notify: &recordingNotifier{}, reg: prometheus.NewRegistry()}
}

// start runs the Deliverer and returns once it is subscribed and has made
// its first sweep.
func (h *harness) start(opts ...func(*bridge.DelivererConfig)) {
	t := h.t
	h.bus = memory.New(quietLogger())
	metrics, err := bridge.NewMetrics(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.kicker = bridge.NewNotifier(bridge.NotifierConfig{Node: "test", Publisher: h.bus.Publisher(), Logger: quietLogger()})
	cfg := bridge.DelivererConfig{
		Channel: channel, Sender: h.sender, Store: h.store, Notify: h.notify, Bus: h.bus,
		Workers: 4, Clock: h.clock, Logger: quietLogger(), Metrics: metrics,
		Backoff:       func(n int) time.Duration { return time.Second << (n - 1) }, // no jitter in tests
		SweepInterval: time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := bridge.NewDeliverer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sweeps := h.store.sweeps()
	ctx, end := context.WithCancelCause(context.Background())
	h.cancel, h.end, h.done = func() { end(nil) }, end, make(chan error, 1)
	go func() { h.done <- d.Run(ctx) }()
	// The first sweep runs after the subscription is made.
	eventually(t, "the first sweep", func() bool { return h.store.sweeps() > sweeps })
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		h.bus.Close()
	})
}

func (h *harness) stop() error {
	if h.stopped {
		return nil
	}
	h.stopped = true
	h.cancel()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("Run did not return")
	}
}

// kick publishes a kick for e, as the core does after a commit.
func (h *harness) kick(e core.OutboxEntry) { h.kicker.Deliver(context.Background(), e) }

// settle kicks e's key and waits until the Deliverer has looked at the key's
// head: everything it was going to do for the key by now, it has started.
func (h *harness) settle(e core.OutboxEntry) {
	n := h.store.heads(e.Key)
	h.kick(e)
	eventually(h.t, "the kick to be handled", func() bool { return h.store.heads(e.Key) > n })
}

func (h *harness) waitFinished(ids ...int64) {
	for _, id := range ids {
		eventually(h.t, fmt.Sprintf("entry %d to finish", id), func() bool {
			_, ok := h.store.entry(id)
			return !ok
		})
	}
}

func (h *harness) waitAttempts(id int64, n int) {
	eventually(h.t, fmt.Sprintf("entry %d to have %d recorded attempts", id, n), func() bool {
		e, ok := h.store.entry(id)
		return ok && e.Attempts == n
	})
}

func (h *harness) metric(name string, labels map[string]string) float64 {
	h.t.Helper()
	return metricValue(h.t, h.reg, name, labels)
}

func TestDeliverSendsAndMarksSent(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addReply(channel, 7, "hello", h.clock.Now())
	h.kick(e)
	h.waitFinished(e.ID)

	m := h.store.message(e.MessageID)
	if m.Status != core.MsgSent || m.ExternalID != fmt.Sprintf("ext-%d", e.ID) {
		t.Errorf("message status %q external id %q, want sent ext-%d", m.Status, m.ExternalID, e.ID)
	}
	a := h.sender.attemptsOf(e.ID)
	if len(a) != 1 {
		t.Fatalf("%d attempts, want 1", len(a))
	}
	if out := a[0].out; out.Message == nil || out.Message.Text != "hello" || out.Conversation == nil ||
		out.Conversation.ExternalID != "customer-7" {
		t.Errorf("Outgoing = %+v, want the message and its conversation", out)
	}
	eventually(t, "a status update", func() bool { return len(h.notify.statuses()) == 1 })
	u := h.notify.statuses()[0]
	if u.Message.ID != e.MessageID || u.Message.Status != core.MsgSent || u.Message.ExternalID == "" {
		t.Errorf("status update %+v, want message %d sent with its external id", u.Message, e.MessageID)
	}
	if got := h.metric("kefu_messages_out_total", map[string]string{"channel": channel, "result": "sent"}); got != 1 {
		t.Errorf("messages out sent = %v, want 1", got)
	}
	if got := h.metric("kefu_delivery_latency_seconds", map[string]string{"channel": channel}); got != 1 {
		t.Errorf("latency observations = %v, want 1", got)
	}
}

func TestDeliverPayloadEntry(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addPayload(channel, "agent:alice", []byte(`{"text":"#12 new message"}`), h.clock.Now())
	h.kick(e)
	h.waitFinished(e.ID)
	a := h.sender.attemptsOf(e.ID)
	if len(a) != 1 || a[0].out.Message != nil || string(a[0].out.Entry.Payload) != `{"text":"#12 new message"}` {
		t.Fatalf("attempts %+v, want one with the payload and no message", a)
	}
	if n := len(h.notify.statuses()); n != 0 {
		t.Errorf("%d status updates for a payload entry, want 0", n)
	}
}

func TestDeliverPermanentFailure(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantReason string
	}{
		{"permanent", bridge.Permanent("user blocked the bot", errors.New("403 Forbidden")), "user blocked the bot"},
		{"wrapped permanent", fmt.Errorf("telegram: %w", bridge.Permanent("", errors.New("chat not found"))), "chat not found"},
		{"window closed", fmt.Errorf("whatsapp: %w", core.ErrWindowClosed), "whatsapp: reply window closed"},
		// A provider's bytes that PostgreSQL's text refuses: stored as every
		// store can keep them (else FinishOutbox would fail for good, and the
		// conversation's later replies wait behind it).
		{"unstorable reason", bridge.Permanent("refused \x00[\xff]", nil), "refused [\uFFFD]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start()
			e := h.store.addReply(channel, 1, "hi", h.clock.Now())
			h.sender.fail(e.ID, tc.err)
			h.kick(e)
			h.waitFinished(e.ID)
			m := h.store.message(e.MessageID)
			if m.Status != core.MsgFailed || m.FailReason != tc.wantReason {
				t.Errorf("message %q %q, want failed %q", m.Status, m.FailReason, tc.wantReason)
			}
			if n := len(h.sender.attemptsOf(e.ID)); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
			eventually(t, "a status update", func() bool { return len(h.notify.statuses()) == 1 })
			if u := h.notify.statuses()[0]; u.Message.Status != core.MsgFailed || u.Message.FailReason != tc.wantReason {
				t.Errorf("status update %+v", u.Message)
			}
			if got := h.metric("kefu_messages_out_total", map[string]string{"channel": channel, "result": "failed"}); got != 1 {
				t.Errorf("messages out failed = %v, want 1", got)
			}
			// The failure is in the conversation's log, for the agents.
			ev := h.store.appendedMessages()
			if len(ev) != 1 || ev[0].Event == nil || ev[0].Event.Type != core.EventDeliveryFailed || ev[0].Text != tc.wantReason ||
				ev[0].ConversationID != m.ConversationID || ev[0].Visibility != core.Internal {
				t.Errorf("appended %+v, want one delivery_failed event with the reason", ev)
			}
		})
	}
}

func TestDeliverTransientFailureRetriedThenSentOnce(t *testing.T) {
	h := newHarness(t)
	h.start()
	t0 := h.clock.Now()
	e := h.store.addReply(channel, 1, "hi", t0)
	h.sender.fail(e.ID, errors.New("502 Bad Gateway"), errors.New("connection reset"))
	h.kick(e)

	h.waitAttempts(e.ID, 1)
	if got, _ := h.store.entry(e.ID); !got.NextAttemptAt.Equal(t0.Add(time.Second)) || got.LastError != "502 Bad Gateway" {
		t.Errorf("after the 1st failure: next %v, last error %q; want t0+1s, the error", got.NextAttemptAt.Sub(t0), got.LastError)
	}
	h.clock.Advance(time.Second)
	h.waitAttempts(e.ID, 2)
	if got, _ := h.store.entry(e.ID); !got.NextAttemptAt.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("after the 2nd failure: next attempt at t0+%v, want t0+3s", got.NextAttemptAt.Sub(t0))
	}
	h.clock.Advance(2 * time.Second)
	h.waitFinished(e.ID)

	a := h.sender.attemptsOf(e.ID)
	if len(a) != 3 {
		t.Fatalf("%d attempts, want 3", len(a))
	}
	if want := []time.Duration{0, time.Second, 3 * time.Second}; a[0].at.Sub(t0) != want[0] ||
		a[1].at.Sub(t0) != want[1] || a[2].at.Sub(t0) != want[2] {
		t.Errorf("attempts at %v, %v, %v; want %v", a[0].at.Sub(t0), a[1].at.Sub(t0), a[2].at.Sub(t0), want)
	}
	if m := h.store.message(e.MessageID); m.Status != core.MsgSent {
		t.Errorf("status %q, want sent", m.Status)
	}
	if got := h.metric("kefu_messages_out_total", map[string]string{"channel": channel, "result": "retry"}); got != 2 {
		t.Errorf("messages out retry = %v, want 2", got)
	}
	// More kicks after the end send nothing.
	h.settle(e)
	if n := len(h.sender.attemptsOf(e.ID)); n != 3 {
		t.Errorf("%d attempts after late kicks, want 3", n)
	}
}

func TestDeliverGivesUpAfterTheLimit(t *testing.T) {
	h := newHarness(t)
	h.start()
	// Committed 25 h ago and still failing: given up, the agent is told.
	e := h.store.addReply(channel, 1, "hi", h.clock.Now().Add(-25*time.Hour))
	h.sender.fail(e.ID, errors.New("503 Service Unavailable"))
	h.kick(e)
	h.waitFinished(e.ID)
	m := h.store.message(e.MessageID)
	if m.Status != core.MsgFailed || !strings.Contains(m.FailReason, "not delivered within 24h0m0s") ||
		!strings.Contains(m.FailReason, "503") {
		t.Fatalf("message %q %q, want failed with the give-up reason", m.Status, m.FailReason)
	}
}

func TestDeliverRetryAfterHonoured(t *testing.T) {
	h := newHarness(t)
	h.start()
	t0 := h.clock.Now()
	e := h.store.addReply(channel, 1, "hi", t0)
	h.sender.fail(e.ID, bridge.RetryAfter(30*time.Second, errors.New("429 Too Many Requests")))
	h.kick(e)
	h.waitAttempts(e.ID, 1)
	if got, _ := h.store.entry(e.ID); !got.NextAttemptAt.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("next attempt at t0+%v, want t0+30s", got.NextAttemptAt.Sub(t0))
	}

	// Just before the time, kicks and timers find nothing to do.
	h.clock.Advance(29 * time.Second)
	h.settle(e)
	if n := len(h.sender.attemptsOf(e.ID)); n != 1 {
		t.Fatalf("%d attempts before retry_after passed, want 1", n)
	}
	h.clock.Advance(time.Second)
	h.waitFinished(e.ID)

	a := h.sender.attemptsOf(e.ID)
	if len(a) != 2 {
		t.Fatalf("%d attempts, want 2", len(a))
	}
	if gap := a[1].at.Sub(a[0].at); gap < 30*time.Second {
		t.Errorf("second attempt %v after the first, want at least 30s", gap)
	}
	if got := h.metric("kefu_messages_out_total", map[string]string{"channel": channel, "result": "rate_limited"}); got != 1 {
		t.Errorf("messages out rate_limited = %v, want 1", got)
	}
}

// TestDeliverRetryAfterClampedToGiveUp: a Retry-After longer than the
// entry has left does not hold it (and its key) beyond the give-up time:
// it is tried again then, and failed for good if that fails too.
func TestDeliverRetryAfterClampedToGiveUp(t *testing.T) {
	h := newHarness(t)
	h.start()
	t0 := h.clock.Now()
	e := h.store.addReply(channel, 1, "hi", t0.Add(-24*time.Hour+time.Minute))
	year := bridge.RetryAfter(365*24*time.Hour, errors.New("429 Too Many Requests"))
	h.sender.fail(e.ID, year, year)
	h.kick(e)
	h.waitAttempts(e.ID, 1)
	if got, _ := h.store.entry(e.ID); !got.NextAttemptAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("next attempt at t0+%v, want t0+1m (the give-up time)", got.NextAttemptAt.Sub(t0))
	}
	h.clock.Advance(time.Minute)
	h.waitFinished(e.ID)
	if m := h.store.message(e.MessageID); m.Status != core.MsgFailed || !strings.Contains(m.FailReason, "not delivered within 24h0m0s") {
		t.Fatalf("message %q %q, want failed with the give-up reason", m.Status, m.FailReason)
	}
}

// TestDeliverMediaGetsLonger: a reply with an attachment, which the sender
// may upload first, gets MediaSendTimeout; a text gets SendTimeout.
func TestDeliverMediaGetsLonger(t *testing.T) {
	h := newHarness(t)
	h.start()
	text := h.store.addReply(channel, 1, "hi", h.clock.Now())
	file := h.store.addReply(channel, 2, "", h.clock.Now())
	h.store.mu.Lock()
	m := h.store.messages[file.MessageID]
	m.Kind, m.Media = core.KindFile, &core.Media{Key: "k", Name: "report.pdf", Type: "application/pdf", Size: 20 << 20}
	h.store.messages[file.MessageID] = m
	h.store.mu.Unlock()
	for _, e := range []core.OutboxEntry{text, file} {
		h.kick(e)
		h.waitFinished(e.ID)
	}
	if b := h.sender.attemptsOf(text.ID)[0].budget; b <= 0 || b > 30*time.Second {
		t.Errorf("text send had %v, want at most the 30 s default", b)
	}
	if b := h.sender.attemptsOf(file.ID)[0].budget; b <= 4*time.Minute || b > 5*time.Minute {
		t.Errorf("attachment send had %v, want the 5 min default", b)
	}
}

func TestDeliverBackingOffKeyDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *bridge.DelivererConfig) { c.Workers = 1 })
	now := h.clock.Now()
	slow := h.store.addReply(channel, 1, "to a rate-limited chat", now)
	other := h.store.addReply(channel, 2, "to another chat", now)
	h.sender.fail(slow.ID, bridge.RetryAfter(time.Hour, errors.New("429")))

	h.kick(slow)
	h.waitAttempts(slow.ID, 1)
	// With one worker, the other key goes through while the first waits an hour.
	h.kick(other)
	h.waitFinished(other.ID)
	if _, ok := h.store.entry(slow.ID); !ok {
		t.Error("the rate-limited entry was finished")
	}
}

func TestDeliverSlowChannelDoesNotBlockAnother(t *testing.T) {
	h := newHarness(t)
	h.start()
	gate := make(chan struct{})
	defer close(gate)
	stuck := h.store.addReply(channel, 1, "stuck", h.clock.Now())
	h.sender.mu.Lock()
	h.sender.gates[stuck.ID] = gate
	h.sender.mu.Unlock()
	h.kick(stuck)
	eventually(t, "the stuck send to start", func() bool { return len(h.sender.attemptsOf(stuck.ID)) == 1 })

	// A second channel instance on the same bus and store.
	other := newFakeSender(h.clock)
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{Channel: "tg", Sender: other, Store: h.store,
		Bus: h.bus, Clock: h.clock, Logger: quietLogger(), SweepInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	e := h.store.addReply("tg", 2, "hi", h.clock.Now())
	// The new Deliverer's first sweep finds it, whether or not the kick arrives.
	h.kick(e)
	h.waitFinished(e.ID)
}

func TestDeliverPerKeyOrderUnderConcurrency(t *testing.T) {
	const keys, perKey = 6, 15
	h := newHarness(t)
	h.sender.jitter = true
	h.start(func(c *bridge.DelivererConfig) { c.Workers = 4 })
	now := h.clock.Now()
	var all []core.OutboxEntry
	for i := range perKey {
		for k := range keys {
			all = append(all, h.store.addReply(channel, int64(k+1), fmt.Sprintf("k%d m%d", k, i), now))
		}
	}
	// The first entry of conversation 1 fails once: its key must wait for it.
	first := all[0]
	h.sender.fail(first.ID, errors.New("timeout"))
	// Kick in a scrambled order, some twice.
	kicks := append([]core.OutboxEntry(nil), all...)
	kicks = append(kicks, all[:10]...)
	rand.Shuffle(len(kicks), func(i, j int) { kicks[i], kicks[j] = kicks[j], kicks[i] })
	for _, e := range kicks {
		h.kick(e)
	}

	// Every other key drains; the failing key waits for its head.
	for _, e := range all {
		if e.Key != first.Key {
			h.waitFinished(e.ID)
		}
	}
	h.waitAttempts(first.ID, 1)
	if got := h.sender.sent()[first.Key]; len(got) != 0 {
		t.Fatalf("key %s sent %v while its head was backing off", first.Key, got)
	}
	h.clock.Advance(time.Second)
	for _, e := range all {
		h.waitFinished(e.ID)
	}

	want := map[string][]int64{}
	for _, e := range all {
		want[e.Key] = append(want[e.Key], e.ID)
	}
	got := h.sender.sent()
	for key, ids := range want {
		if fmt.Sprint(got[key]) != fmt.Sprint(ids) {
			t.Errorf("key %s sent %v, want %v", key, got[key], ids)
		}
	}
	if h.sender.overlaps != 0 {
		t.Errorf("%d sends overlapped another send of the same key", h.sender.overlaps)
	}
}

func TestDeliverSweepsEntriesPresentAtStart(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	// Committed before a crash: never kicked in this process.
	a := h.store.addReply(channel, 1, "a", now.Add(-time.Hour))
	b := h.store.addReply(channel, 2, "b", now.Add(-time.Minute))
	p := h.store.addPayload(channel, "agent:bob", []byte("x"), now)
	otherChannel := h.store.addReply("tg", 3, "not mine", now)
	// One that was backing off when the process died, due in 10 s.
	later := h.store.addReply(channel, 4, "later", now)
	if err := h.store.RetryOutbox(context.Background(), later.ID, now.Add(10*time.Second), "429"); err != nil {
		t.Fatal(err)
	}
	h.start(func(c *bridge.DelivererConfig) { c.SweepInterval = 5 * time.Second })
	h.waitFinished(a.ID, b.ID, p.ID)
	if _, ok := h.store.entry(otherChannel.ID); !ok {
		t.Error("the entry of another channel was delivered")
	}
	if n := len(h.sender.attemptsOf(later.ID)); n != 0 {
		t.Errorf("the entry due in 10s was tried %d times at once", n)
	}
	// Periodic sweeps find it once it is due.
	h.clock.Advance(5 * time.Second)
	h.clock.Advance(5 * time.Second)
	h.waitFinished(later.ID)
	if at := h.sender.attemptsOf(later.ID)[0].at; at.Before(now.Add(10 * time.Second)) {
		t.Errorf("tried at now+%v, before it was due", at.Sub(now))
	}
}

func TestDeliverKickedTwiceSentOnce(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *bridge.DelivererConfig) { c.SweepInterval = 5 * time.Second })
	e := h.store.addReply(channel, 1, "hi", h.clock.Now())
	gate := h.sender.gate(e.ID)
	h.kick(e)
	eventually(t, "the send to start", func() bool { return len(h.sender.attemptsOf(e.ID)) == 1 })
	// While it is in flight: more kicks and a sweep. Kicks are handled in
	// order, so once a kick for another key is handled, these were too.
	for range 5 {
		h.kick(e)
	}
	h.settle(core.OutboxEntry{ID: e.ID + 1000, Channel: channel, Key: "other"})
	sweeps := h.store.sweeps()
	h.clock.Advance(5 * time.Second)
	eventually(t, "a sweep", func() bool { return h.store.sweeps() > sweeps })
	close(gate)
	h.waitFinished(e.ID)
	h.settle(e)
	if n := len(h.sender.attemptsOf(e.ID)); n != 1 {
		t.Errorf("sent %d times, want once", n)
	}
}

func TestDeliverSenderPanicIsRetried(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addReply(channel, 1, "hi", h.clock.Now())
	h.sender.mu.Lock()
	h.sender.panicOn[e.ID] = true
	h.sender.mu.Unlock()
	h.kick(e)
	h.waitAttempts(e.ID, 1)
	if got, _ := h.store.entry(e.ID); !strings.Contains(got.LastError, "sender panicked") {
		t.Errorf("last error %q", got.LastError)
	}
	h.clock.Advance(time.Second)
	h.waitFinished(e.ID)
}

func TestDeliverFinishRetriedWithoutResending(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addReply(channel, 1, "hi", h.clock.Now())
	h.store.mu.Lock()
	h.store.failFinish = 1
	h.store.mu.Unlock()
	h.kick(e)
	h.waitFinished(e.ID)
	if n := len(h.sender.attemptsOf(e.ID)); n != 1 {
		t.Errorf("sent %d times, want once", n)
	}
	if m := h.store.message(e.MessageID); m.Status != core.MsgSent {
		t.Errorf("status %q, want sent", m.Status)
	}
}

func TestDeliverShutdownWaitsForSendsInFlight(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addReply(channel, 1, "hi", h.clock.Now())
	gate := h.sender.gate(e.ID)
	h.kick(e)
	eventually(t, "the send to start", func() bool { return len(h.sender.attemptsOf(e.ID)) == 1 })
	h.cancel()
	go func() {
		time.Sleep(20 * time.Millisecond) // let Run see the cancellation first
		close(gate)
	}()
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, ok := h.store.entry(e.ID); ok {
		t.Error("Run returned before the send in flight was recorded")
	}
}

func TestDeliverShutdownIsBounded(t *testing.T) {
	t.Run("sender honours ctx", func(t *testing.T) {
		h := newHarness(t)
		h.sender.honourCtx = true
		h.start(func(c *bridge.DelivererConfig) { c.ShutdownTimeout = 10 * time.Millisecond })
		e := h.store.addReply(channel, 1, "hi", h.clock.Now())
		h.sender.gate(e.ID) // never opened
		h.kick(e)
		eventually(t, "the send to start", func() bool { return len(h.sender.attemptsOf(e.ID)) == 1 })
		if err := h.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		// The cancelled attempt is recorded, to be tried again after restart.
		if got, ok := h.store.entry(e.ID); !ok || got.Attempts != 1 {
			t.Errorf("entry %+v, want kept with one failed attempt", got)
		}
	})
	t.Run("sender ignores ctx", func(t *testing.T) {
		h := newHarness(t)
		h.start(func(c *bridge.DelivererConfig) { c.ShutdownTimeout = 10 * time.Millisecond })
		e := h.store.addReply(channel, 1, "hi", h.clock.Now())
		gate := h.sender.gate(e.ID)
		defer close(gate)
		h.kick(e)
		eventually(t, "the send to start", func() bool { return len(h.sender.attemptsOf(e.ID)) == 1 })
		if err := h.stop(); err == nil || !strings.Contains(err.Error(), "still running") {
			t.Fatalf("Run = %v, want an error about sends still running", err)
		}
	})
}

// TestDeliverLeaseLostCancelsSendsAtOnce: a Deliverer whose lease was lost
// gives its sends in flight no grace period (here an hour): another node
// may take the lease over and send the same entries a third of the TTL
// later.
func TestDeliverLeaseLostCancelsSendsAtOnce(t *testing.T) {
	for _, cause := range []error{bridge.ErrLeaseLost, bridge.ErrLeaseTaken} {
		t.Run(cause.Error(), func(t *testing.T) {
			h := newHarness(t)
			h.sender.honourCtx = true
			h.start(func(c *bridge.DelivererConfig) { c.ShutdownTimeout = time.Hour })
			e := h.store.addReply(channel, 1, "hi", h.clock.Now())
			h.sender.gate(e.ID) // never opened: only the cancellation ends the send
			h.kick(e)
			eventually(t, "the send to start", func() bool { return len(h.sender.attemptsOf(e.ID)) == 1 })
			h.end(cause)
			if err := h.stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// The cancelled attempt is recorded; the new holder sends it.
			if got, ok := h.store.entry(e.ID); !ok || got.Attempts != 1 {
				t.Errorf("entry %+v, want kept with one failed attempt", got)
			}
		})
	}
}

func TestDeliverPoisonsUnreadableKicks(t *testing.T) {
	h := newHarness(t)
	h.start()
	poison, err := h.bus.WorkSubscriber().Subscribe(t.Context(), bridge.PoisonTopic)
	if err != nil {
		t.Fatal(err)
	}
	bad := message.NewMessage("bad-1", []byte(`{"v":1,"kind":"deliver"}`))
	if err := h.bus.Publisher().Publish(bridge.DeliverTopic(channel), bad); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-poison:
		m.Ack()
		if m.UUID != "bad-1" || !strings.Contains(m.Metadata.Get(middleware.ReasonForPoisonedKey), "without outbox") {
			t.Errorf("poisoned %s with reason %q", m.UUID, m.Metadata.Get(middleware.ReasonForPoisonedKey))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on the poison topic")
	}
	// The Deliverer carries on.
	e := h.store.addReply(channel, 1, "hi", h.clock.Now())
	h.kick(e)
	h.waitFinished(e.ID)
}

func TestNewDelivererValidates(t *testing.T) {
	_, err := bridge.NewDeliverer(bridge.DelivererConfig{})
	for _, want := range []string{"Channel", "Sender", "Store"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestDefaultBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 800 * time.Millisecond, 1200 * time.Millisecond},
		{2, 1600 * time.Millisecond, 2400 * time.Millisecond},
		{3, 3200 * time.Millisecond, 4800 * time.Millisecond},
		{9, 204800 * time.Millisecond, 5 * time.Minute}, // 256 s ± 20 %, capped
		{10, 4 * time.Minute, 5 * time.Minute},
		{1000, 4 * time.Minute, 5 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.attempt), func(t *testing.T) {
			for range 200 {
				if d := bridge.DefaultBackoff(tc.attempt); d < tc.min || d > tc.max {
					t.Fatalf("DefaultBackoff(%d) = %v, want in [%v, %v]", tc.attempt, d, tc.min, tc.max)
				}
			}
		})
	}
}

// TestSweepFindsAKeyBehindABacklog: a lost kick is found by the sweep even
// while another conversation has more entries than a sweep's page queued
// behind a head that backs off (a 429 with a long retry_after): they are
// not due before their head, so they do not fill the page.
func TestSweepFindsAKeyBehindABacklog(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	head := h.store.addReply(channel, 1, "head", now.Add(-time.Minute))
	for range 20 {
		h.store.addReply(channel, 1, "queued", now.Add(-time.Minute))
	}
	if err := h.store.RetryOutbox(context.Background(), head.ID, now.Add(time.Hour), "429"); err != nil {
		t.Fatal(err)
	}
	// Conversation 2's reply was committed before a crash; its kick died
	// with the node.
	other := h.store.addReply(channel, 2, "to another customer", now)
	h.start(func(c *bridge.DelivererConfig) { c.SweepInterval = 5 * time.Second; c.SweepLimit = 10 })
	for range 40 { // up to 20 sweeps
		if _, ok := h.store.entry(other.ID); !ok {
			return
		}
		h.clock.Advance(time.Second * 5 / 2)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("conversation 2's reply still waits after %d sweeps: the page was full of conversation 1's backlog", h.store.sweeps())
}

// TestDeliverAttachmentsLeaveWorkersToText: a send with an attachment may
// take MediaSendTimeout (5 min); at most half the workers send attachments
// at once, so that attachments hanging on a silent provider leave the
// other half to text. The attachments that waited go once a send ends.
func TestDeliverAttachmentsLeaveWorkersToText(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *bridge.DelivererConfig) { c.Workers = 4 })
	gate := make(chan struct{})
	var files []core.OutboxEntry
	for conv := int64(1); conv <= 4; conv++ {
		e := h.store.addReply(channel, conv, "", h.clock.Now())
		h.store.mu.Lock()
		m := h.store.messages[e.MessageID]
		m.Kind, m.Media = core.KindFile, &core.Media{Key: "k", Name: "report.pdf", Type: "application/pdf", Size: 20 << 20}
		h.store.messages[e.MessageID] = m
		h.store.mu.Unlock()
		h.sender.mu.Lock()
		h.sender.gates[e.ID] = gate
		h.sender.mu.Unlock()
		files = append(files, e)
	}
	for _, e := range files {
		h.kick(e)
	}
	started := func() int {
		n := 0
		for _, e := range files {
			n += len(h.sender.attemptsOf(e.ID))
		}
		return n
	}
	eventually(t, "two attachments' sends to start", func() bool { return started() == 2 })
	text := h.store.addReply(channel, 5, "a text goes through meanwhile", h.clock.Now())
	h.kick(text)
	h.waitFinished(text.ID)
	if n := started(); n != 2 {
		t.Errorf("%d attachments' sends under way, want 2 of the 4 workers", n)
	}
	close(gate)
	for _, e := range files {
		h.waitFinished(e.ID)
	}
}

// A reply written on a node whose clock is ahead is stamped with that
// clock: its first attempt is due at once all the same, not when this
// node's clock catches up.
func TestDeliverFirstAttemptIgnoresTheWritersClock(t *testing.T) {
	h := newHarness(t)
	h.start()
	e := h.store.addReply(channel, 7, "hello", h.clock.Now().Add(3*time.Second))
	h.kick(e)
	h.waitFinished(e.ID)
}

// downBus is a bus whose subscriptions fail while down is set (Redis or
// NATS unreachable).
type downBus struct {
	bridge.Bus
	down *atomic.Bool
	subs *atomic.Int32 // subscriptions made
}

func (b downBus) WorkSubscriber() message.Subscriber {
	return downSubscriber{Subscriber: b.Bus.WorkSubscriber(), bus: b}
}

func (b downBus) FanoutSubscriber() message.Subscriber {
	return downSubscriber{Subscriber: b.Bus.FanoutSubscriber(), bus: b}
}

type downSubscriber struct {
	message.Subscriber
	bus downBus
}

func (s downSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.bus.down.Load() {
		return nil, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	}
	ch, err := s.Subscriber.Subscribe(ctx, topic)
	if err == nil {
		s.bus.subs.Add(1)
	}
	return ch, err
}

// A Deliverer that starts while the bus is down (the lease moved during
// an outage) delivers from its sweeps, and takes kicks again once it can
// subscribe: an outage of the bus does not stop replies.
func TestDeliverStartsWhileTheBusIsDown(t *testing.T) {
	h := newHarness(t)
	down, subs := &atomic.Bool{}, &atomic.Int32{}
	down.Store(true)
	h.start(func(c *bridge.DelivererConfig) { c.Bus = downBus{Bus: c.Bus, down: down, subs: subs} })
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v while the bus is down", err)
	default:
	}

	// No kick reaches it: the next sweep sends the reply.
	e := h.store.addReply(channel, 7, "hello", h.clock.Now())
	h.clock.Advance(time.Minute)
	h.waitFinished(e.ID)

	// The bus is back: a later try subscribes, and from then on a kick is
	// enough (the clock stands still: no sweep is due).
	down.Store(false)
	eventually(t, "a subscription", func() bool {
		h.clock.Advance(time.Second)
		return subs.Load() > 0
	})
	e2 := h.store.addReply(channel, 8, "again", h.clock.Now())
	h.kick(e2)
	h.waitFinished(e2.ID)
}
