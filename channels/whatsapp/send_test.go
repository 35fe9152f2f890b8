package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	wt "github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
)

func TestSendText(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.S0", "hi"))
	c := h.only()
	m := h.deliver(h.reply(c.ID, "Hello! How can I help?").ID)
	sent := h.api.Sent()
	if len(sent) != 1 {
		t.Fatalf("%d sent, want 1", len(sent))
	}
	call := sent[0]
	if call.Path != "/v21.0/"+testPhoneID+"/messages" || call.Bearer != testToken {
		t.Fatalf("sent to %s with token %q", call.Path, call.Bearer)
	}
	got := call.Message
	if got.MessagingProduct != "whatsapp" || got.RecipientType != "individual" || got.To != zhang.WaID ||
		got.Type != "text" || got.Text == nil || got.Text.Body != "Hello! How can I help?" {
		t.Fatalf("body = %s", call.Body)
	}
	if m.ExternalID != call.WamID || m.Status != core.MsgSent {
		t.Fatalf("message after send: %+v, want wamid %s", m, call.WamID)
	}
}

func TestSendMedia(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.S0", "hi"))
	c := h.only()
	save := func(data []byte, name string) *core.Media {
		m, err := h.media.Save(h.ctx, bytes.NewReader(data), name)
		if err != nil {
			t.Fatal(err)
		}
		return &m
	}
	img := save(jpegSample(t), "label.jpg")
	pdf := save(pdfSample(), "invoice.pdf")
	ogg := save(oggSample(), "note.ogg")
	tests := []struct {
		name, text string
		media      *core.Media
		wantType   string
		check      func(wt.Message) bool
	}{
		{"image with caption", "your label", img, "image", func(m wt.Message) bool { return m.Image.Caption == "your label" }},
		{"pdf as document", "", pdf, "document", func(m wt.Message) bool { return m.Document.Filename == "invoice.pdf" }},
		{"audio", "", ogg, "audio", func(m wt.Message) bool { return m.Audio != nil }},
		{"audio with a caption goes as a document", "listen", ogg, "document", func(m wt.Message) bool { return m.Document.Caption == "listen" }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind := core.KindFile
			if strings.HasPrefix(tt.media.Type, "image/") {
				kind = core.KindImage
			}
			r, err := h.svc.Reply(h.ctx, h.agent.ID, c.ID, core.Message{Kind: kind, Text: tt.text, Media: tt.media})
			if err != nil {
				t.Fatal(err)
			}
			h.deliver(r.ID)
			sent := h.api.Sent()
			if len(sent) != i+1 {
				t.Fatalf("%d sent", len(sent))
			}
			m := sent[i].Message
			if m.Type != tt.wantType || !tt.check(*m) {
				t.Fatalf("sent %s", sent[i].Body)
			}
			var id string
			switch m.Type {
			case "image":
				id = m.Image.ID
			case "audio":
				id = m.Audio.ID
			case "document":
				id = m.Document.ID
			}
			up, ok := h.api.Uploaded(id)
			if !ok {
				t.Fatalf("media id %q was not uploaded", id)
			}
			rc, _, err := h.media.Open(h.ctx, tt.media.Key)
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			_, _ = want.ReadFrom(rc)
			rc.Close()
			if !bytes.Equal(up.Data, want.Bytes()) || up.Type != tt.media.Type || up.FileType != tt.media.Type ||
				up.MessagingProduct != "whatsapp" || up.Filename != tt.media.Name {
				t.Fatalf("upload = %+v (%d bytes), want the stored file", up.Type, len(up.Data))
			}
		})
	}
	// A file sent twice is uploaded once.
	uploads := 0
	for _, call := range h.api.Calls() {
		if strings.HasSuffix(call.Path, "/media") {
			uploads++
		}
	}
	if uploads != 3 {
		t.Fatalf("%d uploads, want 3 (the audio file is reused)", uploads)
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name       string
		fail       wt.Failure
		permanent  string        // the reason, for permanent failures
		retryAfter time.Duration // for rate limits
		window     bool          // errors.Is core.ErrWindowClosed
	}{
		{"window closed", wt.WindowClosed, reasonWindow, 0, true},
		{"undeliverable", wt.Undeliverable, reasonUndeliverable, 0, false},
		{"token expired", wt.TokenExpired, reasonToken, 0, false},
		{"throughput", wt.RateLimited, "", waitThroughput, false},
		{"throughput with Retry-After", wt.Failure{Status: 429, Code: 130429, Message: "slow", RetryAfter: 30}, "", 30 * time.Second, false},
		{"pair rate", wt.PairRateLimit, "", waitPairRate, false},
		{"app call limit", wt.Failure{Status: 400, Code: 4, Message: "(#4) Application request limit reached"}, "", waitCallRate, false},
		{"plain 429", wt.Failure{Status: 429, Message: "Too Many Requests"}, "", waitHTTP429, false},
		{"server error", wt.ServerError, "", 0, false},
		{"bad gateway without JSON", wt.Failure{Status: 502, Message: "Bad Gateway"}, "", 0, false},
		{"invalid parameter", wt.Failure{Status: 400, Code: 100, Message: "(#100) Invalid parameter"}, "WhatsApp refused the message (100): (#100) Invalid parameter", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.say(zhang, wt.Text("wamid.E0", "hi"))
			r := h.reply(h.only().ID, "hello")
			h.api.FailNext(tt.fail)
			_, err := h.send(r.ID)
			var perm *bridge.PermanentError
			var wait *bridge.RetryAfterError
			switch {
			case err == nil:
				t.Fatal("send succeeded")
			case tt.permanent != "":
				if !errors.As(err, &perm) || perm.Reason != tt.permanent {
					t.Fatalf("err = %v, want permanent %q", err, tt.permanent)
				}
			case tt.retryAfter > 0:
				if !errors.As(err, &wait) || wait.After != tt.retryAfter {
					t.Fatalf("err = %v, want retry after %s", err, tt.retryAfter)
				}
			default:
				if errors.As(err, &perm) || errors.As(err, &wait) {
					t.Fatalf("err = %v, want a transient error", err)
				}
			}
			if errors.Is(err, core.ErrWindowClosed) != tt.window {
				t.Fatalf("errors.Is(err, ErrWindowClosed) = %v", !tt.window)
			}
			// Only 190 makes the channel unusable.
			if healthErr := h.ch.Check(h.ctx); (healthErr != nil) != (tt.fail.Code == 190) {
				t.Fatalf("Check = %v after %s", healthErr, tt.name)
			}
		})
	}
}

func TestTokenErrorMakesChannelUnhealthyUntilASuccess(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.H0", "hi"))
	c := h.only()
	if err := h.ch.Check(h.ctx); err != nil {
		t.Fatalf("Check before: %v", err)
	}
	h.api.FailNext(wt.TokenExpired)
	if _, err := h.send(h.reply(c.ID, "one").ID); err == nil {
		t.Fatal("send with an expired token succeeded")
	}
	err := h.ch.Check(h.ctx)
	if err == nil || !strings.Contains(err.Error(), "access token") {
		t.Fatalf("Check after 190 = %v, want the token reason", err)
	}
	h.deliver(h.reply(c.ID, "two").ID) // the token works again
	if err := h.ch.Check(h.ctx); err != nil {
		t.Fatalf("Check after a success: %v", err)
	}
}

func TestStatusesOnlyMoveForward(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.O0", "hi"))
	c := h.only()
	a := h.deliver(h.reply(c.ID, "first").ID)
	b := h.deliver(h.reply(c.ID, "second").ID)
	now := h.clock.Now()
	status := func(sts ...wt.Msg) {
		t.Helper()
		if code := h.post(wt.Body(wt.Statuses(testPhoneID, sts...))); code != http.StatusOK {
			t.Fatalf("status webhook: HTTP %d", code)
		}
	}
	// Read arrives before delivered (and before a late sent).
	status(wt.Status(a.ExternalID, "read", zhang.WaID, now))
	status(wt.Status(a.ExternalID, "delivered", zhang.WaID, now.Add(-time.Second)),
		wt.Status(a.ExternalID, "sent", zhang.WaID, now.Add(-2*time.Second)))
	if m := h.message(a.ID); m.Status != core.MsgRead {
		t.Fatalf("first message: %s, want read", m.Status)
	}
	// A failure after read does not undo it; a failure of a delivered one sticks.
	status(wt.FailedStatus(a.ExternalID, zhang.WaID, now, 131026, "Message undeliverable"),
		wt.Status(b.ExternalID, "delivered", zhang.WaID, now),
		wt.FailedStatus(b.ExternalID, zhang.WaID, now, 131047, "Re-engagement message"))
	if m := h.message(a.ID); m.Status != core.MsgRead {
		t.Fatalf("first message after a late failure: %s, want read", m.Status)
	}
	if m := h.message(b.ID); m.Status != core.MsgFailed || m.FailReason != reasonWindow {
		t.Fatalf("second message: %s %q, want failed with the window reason", m.Status, m.FailReason)
	}
	// An unknown failure code keeps Meta's words.
	d := h.deliver(h.reply(c.ID, "third").ID)
	status(wt.FailedStatus(d.ExternalID, zhang.WaID, now, 131049, "This message was not delivered to maintain healthy ecosystem engagement."))
	if m := h.message(d.ID); !strings.Contains(m.FailReason, "131049") || !strings.Contains(m.FailReason, "healthy ecosystem") {
		t.Fatalf("third message's reason %q", m.FailReason)
	}
}

func TestStatusBeforeTheSendIsRecorded(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.R0", "hi"))
	c := h.only()
	r := h.reply(c.ID, "quick")
	// Meta's "delivered" arrives before the Deliverer writes the wamid down.
	res, err := h.send(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	body := wt.Body(wt.Statuses(testPhoneID, wt.Status(res.ExternalID, "delivered", zhang.WaID, h.clock.Now())))
	if code := h.post(body); code != http.StatusOK {
		t.Fatalf("early status: HTTP %d", code)
	}
	if m := h.message(r.ID); m.Status != core.MsgDelivered || m.ExternalID != res.ExternalID {
		t.Fatalf("after the early status: %+v", m)
	}
	// The Deliverer's own record of the send comes after: nothing moves back,
	// and later statuses find the message.
	if err := h.store.FinishOutbox(h.ctx, mustOutbox(t, h, r.ID), &core.StatusUpdate{Status: core.MsgSent, ExternalID: res.ExternalID}); err != nil {
		t.Fatal(err)
	}
	if m := h.message(r.ID); m.Status != core.MsgDelivered {
		t.Fatalf("after the Deliverer's record: %s", m.Status)
	}

	// On another node (nothing in memory) a recent unknown status is
	// answered 503, so that Meta repeats it; an old one is dropped.
	h.ch.sent = newRecent[int64](10, time.Hour)
	recent := wt.Body(wt.Statuses(testPhoneID, wt.Status("wamid.NOT-YET", "sent", zhang.WaID, h.clock.Now().Add(-time.Minute))))
	if code := h.post(recent); code != http.StatusServiceUnavailable {
		t.Fatalf("recent unknown status: HTTP %d, want 503", code)
	}
	old := wt.Body(wt.Statuses(testPhoneID, wt.Status("wamid.NOT-OURS", "read", zhang.WaID, h.clock.Now().Add(-time.Hour))))
	if code := h.post(old); code != http.StatusOK {
		t.Fatalf("old unknown status: HTTP %d, want 200", code)
	}
}

func mustOutbox(t *testing.T, h *harness, msgID int64) int64 {
	t.Helper()
	es, err := h.store.Outbox(h.ctx, testName, h.clock.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.MessageID == msgID {
			return e.ID
		}
	}
	t.Fatalf("no outbox entry for message %d", msgID)
	return 0
}

func TestWindowClosedAndTemplate(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.W0", "hi"))
	c := h.only()
	queued := h.reply(c.ID, "written in time, sent too late")

	h.clock.Advance(Window + time.Minute)
	// The core refuses a reply now, telling the agent when the window closed.
	_, err := h.svc.Reply(h.ctx, h.agent.ID, c.ID, core.Message{Kind: core.KindText, Text: "too late"})
	if !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("reply outside the window: %v, want ErrWindowClosed", err)
	}
	if ends := h.svc.WindowEnds(h.only()); !ends.Equal(c.LastInboundAt.Add(Window)) {
		t.Fatalf("WindowEnds = %s", ends)
	}
	// A reply that waited in the outbox past the window fails without asking WhatsApp.
	_, err = h.send(queued.ID)
	var perm *bridge.PermanentError
	if !errors.As(err, &perm) || perm.Reason != reasonWindow || !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("queued reply after the window: %v", err)
	}
	if n := len(h.api.Calls()); n != 0 {
		t.Fatalf("%d calls to WhatsApp, want none", n)
	}

	// The agent sends the reopen template instead.
	tm, err := h.svc.SendTemplate(h.ctx, h.agent.ID, c.ID, "reopen")
	if err != nil {
		t.Fatal(err)
	}
	h.deliver(tm.ID)
	sent := h.api.Sent()
	if len(sent) != 1 || sent[0].Message.Type != "template" {
		t.Fatalf("sent %+v", sent)
	}
	tpl := sent[0].Message.Template
	if tpl.Name != "reopen_conversation" || tpl.Language.Code != "en_US" || len(tpl.Components) != 2 {
		t.Fatalf("template = %s", sent[0].Body)
	}
	wantComponents := `[{"parameters":[{"text":"our support team","type":"text"}],"type":"body"} ` +
		`{"index":"0","parameters":[{"payload":"REOPEN","type":"payload"}],"sub_type":"quick_reply","type":"button"}]`
	if got := fmt.Sprint(jsonString(t, tpl.Components[0]), " ", jsonString(t, tpl.Components[1])); "["+got+"]" != wantComponents {
		t.Fatalf("components = [%s]\nwant %s", got, wantComponents)
	}
	if m := h.message(tm.ID); m.Status != core.MsgSent || m.ExternalID != sent[0].WamID {
		t.Fatalf("template message after send: %+v", m)
	}

	// A template this channel does not know fails with a reason.
	unknown, err := h.svc.SendTemplate(h.ctx, h.agent.ID, c.ID, "welcome")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.send(unknown.ID); !errors.As(err, &perm) || !strings.Contains(perm.Reason, `no template "welcome"`) {
		t.Fatalf("unknown template: %v", err)
	}

	// The customer answers the template: the window opens again.
	h.say(zhang, wt.QuickReply("wamid.W1", "Talk to an agent", "REOPEN"))
	h.deliver(h.reply(c.ID, "Hello again!").ID)
	if got := h.api.Sent(); len(got) != 2 || got[1].Message.Text.Body != "Hello again!" {
		t.Fatalf("after the customer answered: %+v", got)
	}
}

// TestRateLimitHonoured runs a real Deliverer on a fake clock: after a 429
// the conversation's next attempt waits for the time WhatsApp asked for,
// while another conversation's reply goes out meanwhile.
func TestRateLimitHonoured(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.L0", "hi"))
	li := wt.Customer{WaID: "8613900139000", Name: "Li Si"}
	h.say(li, wt.Text("wamid.L1", "hello"))
	cs := h.conversations()

	h.api.FailNext(wt.Failure{Status: 429, Code: 130429, Message: "(#130429) Rate limit hit", RetryAfter: 7})
	limited := h.reply(cs[0].ID, "to Zhang")

	rec := &sendClock{Channel: h.ch, clock: h.clock}
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{
		Channel: testName, Sender: rec, Store: h.store, Clock: h.clock, Logger: quiet(), SweepInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("deliverer: %v", err)
		}
	}()

	// The first attempt is answered 429 with Retry-After 7.
	waitFor(t, "the rate-limited attempt", func() bool { return len(h.api.Calls()) == 1 })
	first := rec.times()[0]
	var entry core.OutboxEntry
	waitFor(t, "the retry to be recorded", func() bool {
		es, _ := h.store.Outbox(h.ctx, testName, first.Add(time.Hour), 10)
		if len(es) == 1 && es[0].Attempts == 1 {
			entry = es[0]
			return true
		}
		return false
	})
	if !entry.NextAttemptAt.Equal(first.Add(7*time.Second)) || !strings.Contains(entry.LastError, "130429") {
		t.Fatalf("outbox entry after the 429: next %s (first attempt %s), error %q", entry.NextAttemptAt, first, entry.LastError)
	}

	// Li's reply is not held up by Zhang's rate limit: the next sweep sends it.
	other := h.reply(cs[1].ID, "to Li")
	h.clock.Advance(time.Second)
	waitFor(t, "Li's reply", func() bool { return len(h.api.Sent()) == 1 })
	if s := h.api.Sent(); s[0].Message.To != li.WaID {
		t.Fatalf("first message out went to %s, want Li", s[0].Message.To)
	}

	// Zhang's reply goes out once the clock reaches NextAttemptAt, not before.
	h.clock.Advance(entry.NextAttemptAt.Sub(h.clock.Now()) - time.Millisecond)
	h.clock.Advance(time.Millisecond)
	waitFor(t, "Zhang's reply", func() bool { return len(h.api.Sent()) == 2 })
	times := rec.times()
	if len(times) != 3 {
		t.Fatalf("%d attempts, want 3 (429, Li, retry)", len(times))
	}
	if retry := times[2]; retry.Before(entry.NextAttemptAt) {
		t.Fatalf("retried at %s, before %s", retry, entry.NextAttemptAt)
	}
	if times[1].After(entry.NextAttemptAt) {
		t.Fatalf("Li's reply went at %s, after Zhang's retry time %s: held up", times[1], entry.NextAttemptAt)
	}
	waitFor(t, "both marked sent", func() bool {
		return h.message(limited.ID).Status == core.MsgSent && h.message(other.ID).Status == core.MsgSent
	})
}

// sendClock records the fake clock's time at each Send.
type sendClock struct {
	*Channel
	clock *fakeClock
	mu    sync.Mutex
	at    []time.Time
}

func (s *sendClock) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	s.mu.Lock()
	s.at = append(s.at, s.clock.Now())
	s.mu.Unlock()
	return s.Channel.Send(ctx, out)
}

func (s *sendClock) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.at...)
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var waitFor = wait.For

func TestSlowAPIIsTransient(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.Z0", "hi"))
	r := h.reply(h.only().ID, "hello")
	m := h.message(r.ID)
	c := h.only()
	h.api.Slow(time.Minute)
	ctx, cancel := context.WithTimeout(h.ctx, 50*time.Millisecond)
	defer cancel()
	_, err := h.ch.Send(ctx, bridge.Outgoing{Entry: core.OutboxEntry{MessageID: r.ID}, Message: &m, Conversation: &c})
	var perm *bridge.PermanentError
	if err == nil || errors.As(err, &perm) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send to a slow API: %v, want a transient deadline error", err)
	}
	h.api.Slow(0)
	h.deliver(r.ID) // tried again, it goes out
}
