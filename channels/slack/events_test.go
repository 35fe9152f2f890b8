package slack_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/channels/slack/slacktest"
	"github.com/kefuhq/kefu/core"
)

// reply is an agent's thread reply in the support channel.
func reply(user, threadTS, text string) slacktest.Event {
	return slacktest.Event{Channel: supportChan, User: user, Text: text, ThreadTS: threadTS}
}

func TestSignature(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	body := reply(aliceSlack, "1700000000.000100", "on it").Payload()
	now := time.Now()

	tests := []struct {
		name string
		send func() (int, string)
		want int
	}{
		{"wrong secret", func() (int, string) {
			resp, err := slacktest.PostEvent(http.DefaultClient, h.srv.URL+slack.EventsPath("slack"), "not-the-secret", body, now, 0)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, http.StatusUnauthorized},
		{"stale", func() (int, string) { return h.post(body, now.Add(-6*time.Minute), 0) }, http.StatusUnauthorized},
		{"from the future", func() (int, string) { return h.post(body, now.Add(6*time.Minute), 0) }, http.StatusUnauthorized},
		{"unsigned", func() (int, string) {
			resp, err := http.Post(h.srv.URL+slack.EventsPath("slack"), "application/json", strings.NewReader(string(body)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, http.StatusUnauthorized},
		{"tampered", func() (int, string) {
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+slack.EventsPath("slack"), strings.NewReader(strings.Replace(string(body), "on it", "refund everyone", 1)))
			slacktest.Sign(signingSecret, req.Header, body, now)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, http.StatusUnauthorized},
		{"GET", func() (int, string) {
			resp, err := http.Get(h.srv.URL + slack.EventsPath("slack"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := tt.send(); code != tt.want {
				t.Fatalf("HTTP %d, want %d", code, tt.want)
			}
			if n := len(h.messages(conv.ID)); n != 1 {
				t.Fatalf("%d messages stored, want the customer's 1", n)
			}
		})
	}

	// Signed within the window: accepted.
	if code, b := h.post(body, now.Add(-4*time.Minute), 0); code != http.StatusOK {
		t.Fatalf("good signature: HTTP %d %s", code, b)
	}
	if n := len(h.messages(conv.ID)); n == 1 {
		t.Fatal("good signature: the reply was not stored")
	}
}

func TestMalformedBodies(t *testing.T) {
	h := newHarness(t, options{})
	for name, body := range map[string]string{
		"not JSON":                   `{"type":`,
		"callback without event":     `{"type":"event_callback","event_id":"Ev1"}`,
		"callback without event_id":  `{"type":"event_callback","event":{"type":"message"}}`,
		"verification no challenge":  `{"type":"url_verification"}`,
		"message of the wrong shape": `{"type":"event_callback","event_id":"Ev2","event":{"type":"message","text":7}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if code, b := h.post([]byte(body), time.Now(), 0); code != http.StatusBadRequest {
				t.Fatalf("HTTP %d %s, want 400", code, b)
			}
		})
	}
	// Events kefu has no use for are acknowledged.
	for name, body := range map[string]string{
		"app_rate_limited": `{"type":"app_rate_limited","minute_rate_limited":1518467820}`,
		"reaction":         `{"type":"event_callback","event_id":"Ev3","event":{"type":"reaction_added","user":"U1"}}`,
		"unknown inner":    `{"type":"event_callback","event_id":"Ev4","event":{"type":"something_new"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if code, b := h.post([]byte(body), time.Now(), 0); code != http.StatusOK {
				t.Fatalf("HTTP %d %s, want 200", code, b)
			}
		})
	}
}

func TestURLVerification(t *testing.T) {
	h := newHarness(t, options{})
	code, body := h.post(slacktest.URLVerification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"), time.Now(), 0)
	if code != http.StatusOK || body != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" {
		t.Fatalf("HTTP %d %q", code, body)
	}
}

func TestAgentReplyAndNote(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "Where is my order?", time.Time{}).Conversation
	if conv.Status != core.StatusPending {
		t.Fatalf("conversation should wait (nobody online): %+v", conv)
	}
	h.mapThread(conv.ID, "1700000000.000100")

	// A reply in the thread of a waiting conversation takes it for Alice.
	if code, b := h.post(reply(aliceSlack, "1700000000.000100", "Checking &amp; back soon, <@U0BOB|bob> <https://track.example.com/1|track it>").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("reply: HTTP %d %s", code, b)
	}
	c := h.conversation(conv.ID)
	if c.AssigneeID != h.alice.ID || c.Status != core.StatusOpen {
		t.Fatalf("reply did not take the conversation: %+v", c)
	}
	ms := h.messages(conv.ID)
	last := ms[len(ms)-1]
	if last.SenderKind != core.SenderAgent || last.SenderID != h.alice.ID || last.Visibility != core.Public ||
		last.Text != "Checking & back soon, @bob track it (https://track.example.com/1)" {
		t.Fatalf("reply stored as %+v", last)
	}

	// note: stays internal.
	if code, b := h.post(reply(aliceSlack, "1700000000.000100", "Note: VIP customer").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("note: HTTP %d %s", code, b)
	}
	ms = h.messages(conv.ID)
	last = ms[len(ms)-1]
	if last.Visibility != core.Internal || last.Text != "VIP customer" || last.SenderID != h.alice.ID {
		t.Fatalf("note stored as %+v", last)
	}
	if n := len(h.fake.Ephemerals()); n != 0 {
		t.Fatalf("%d ephemeral messages for accepted replies", n)
	}
}

func TestDuplicateEvent(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	body := reply(aliceSlack, "1700000000.000100", "only once").Payload()
	for retry := range 3 { // the delivery, then Slack's retries with X-Slack-Retry-Num
		if code, b := h.post(body, time.Now(), retry); code != http.StatusOK {
			t.Fatalf("delivery %d: HTTP %d %s", retry, code, b)
		}
	}
	// Another node (or this one after a restart) gets a retry too.
	other := h.newChannel()
	if err := handle(other, body); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range h.messages(conv.ID) {
		if m.Text == "only once" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("reply stored %d times", n)
	}
}

// handle passes an event body to a channel as its HTTP endpoint would.
func handle(ch *slack.Channel, body []byte) error {
	ev, err := slack.ParseEvent(body)
	if err != nil {
		return err
	}
	return slack.HandleEvent(ch, context.Background(), ev)
}

func TestIgnoredMessages(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	waitFor(t, "the bot's identity", func() bool { return slack.BotUser(h.ch) == slacktest.BotUserID })

	tests := map[string]slacktest.Event{
		"our own post (bot_id)":    {Channel: supportChan, User: slacktest.BotUserID, BotID: slacktest.BotID, Text: "*Zhang San:* hello", ThreadTS: "1700000000.000100"},
		"our bot user, no bot_id":  {Channel: supportChan, User: slacktest.BotUserID, Text: "echo", ThreadTS: "1700000000.000100"},
		"another bot":              {Channel: supportChan, User: "U0OTHERBOT", BotID: "B0OTHER", Text: "beep", ThreadTS: "1700000000.000100"},
		"bot_message subtype":      {Channel: supportChan, SubType: "bot_message", BotID: "B0OTHER", Text: "beep", ThreadTS: "1700000000.000100"},
		"edit":                     {Channel: supportChan, User: aliceSlack, SubType: "message_changed", Text: "edited", ThreadTS: "1700000000.000100"},
		"top-level message":        {Channel: supportChan, User: aliceSlack, Text: "lunch?"},
		"unknown thread":           reply(aliceSlack, "1600000000.000001", "hi"),
		"unmapped, unknown thread": reply(strangerSlack, "1600000000.000001", "hi"),
		"another channel":          {Channel: "C0OTHER01", User: aliceSlack, Text: "hi", ThreadTS: "1700000000.000100"},
	}
	for name, ev := range tests {
		t.Run(name, func(t *testing.T) {
			if code, b := h.post(ev.Payload(), time.Now(), 0); code != http.StatusOK {
				t.Fatalf("HTTP %d %s, want 200", code, b)
			}
		})
	}
	if n := len(h.messages(conv.ID)); n != 1 {
		t.Fatalf("%d messages stored, want the customer's 1", n)
	}
	// Notices are posted in order: once this one is out, any the events
	// above caused would be too.
	sentinel(t, h, "1700000000.000100")
	if eph := h.fake.Ephemerals(); len(eph) != 1 {
		t.Fatalf("ephemeral messages %+v, want only the sentinel's", eph)
	}
}

// sentinel makes kefu post an ephemeral notice (a reply from an unmapped
// user in thread ts) and waits for it.
func sentinel(t *testing.T, h *harness, ts string) {
	t.Helper()
	n := len(h.fake.Ephemerals())
	if code, _ := h.post(reply("U0SENTINEL", ts, "sentinel").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("sentinel: HTTP %d", code)
	}
	waitFor(t, "the sentinel notice", func() bool {
		eph := h.fake.Ephemerals()
		return len(eph) > n && eph[len(eph)-1].User == "U0SENTINEL"
	})
}

func TestUnmappedUser(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	body := reply(strangerSlack, "1700000000.000100", "I can help!").Payload()
	if code, b := h.post(body, time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, b)
	}
	eph := h.fake.WaitEphemerals(1, 10*time.Second)
	if len(eph) != 1 {
		t.Fatalf("ephemerals: %+v", eph)
	}
	e := eph[0]
	if e.User != strangerSlack || e.Channel != supportChan || e.ThreadTS != "1700000000.000100" ||
		!strings.Contains(e.Text, "not mapped") || !strings.Contains(e.Text, "slack_user: "+strangerSlack) {
		t.Fatalf("ephemeral = %+v", e)
	}
	if n := len(h.messages(conv.ID)); n != 1 {
		t.Fatalf("%d messages stored, want the customer's 1", n)
	}
	if c := h.conversation(conv.ID); c.AssigneeID != 0 {
		t.Fatalf("conversation assigned by an unmapped user: %+v", c)
	}
	// Slack's retry of the same event: no second explanation.
	if code, _ := h.post(body, time.Now(), 1); code != http.StatusOK {
		t.Fatalf("retry: HTTP %d", code)
	}
	sentinel(t, h, "1700000000.000100")
	if n := len(h.fake.Ephemerals()); n != 2 {
		t.Fatalf("%d ephemerals after a retry, want 1 and the sentinel's", n)
	}
}

func TestRefusalsExplained(t *testing.T) {
	h := newHarness(t, options{window: 24 * time.Hour})
	ctx := context.Background()
	// The customer last wrote two days ago: the 24-hour window is closed.
	old := h.customer("c1", "Zhang San", "hello", time.Now().Add(-48*time.Hour)).Conversation
	h.mapThread(old.ID, "1700000000.000100")
	if code, _ := h.post(reply(aliceSlack, "1700000000.000100", "sorry for the wait").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	eph := h.fake.WaitEphemerals(1, 10*time.Second)
	if len(eph) != 1 || !strings.Contains(eph[0].Text, "window has closed") || eph[0].User != aliceSlack {
		t.Fatalf("ephemerals: %+v", eph)
	}
	if n := len(h.messages(old.ID)); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	// A note is still fine outside the window.
	if code, _ := h.post(reply(aliceSlack, "1700000000.000100", "note: customer is away").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if n := len(h.messages(old.ID)); n != 2 {
		t.Fatalf("note not stored: %d messages", n)
	}

	// A deactivated agent is told too.
	a := h.alice
	a.Active = false
	if err := h.store.UpdateAgent(ctx, h.alice, a); err != nil {
		t.Fatal(err)
	}
	fresh := h.customer("c2", "Li Si", "hi", time.Time{}).Conversation
	h.mapThread(fresh.ID, "1700000000.000200")
	if code, _ := h.post(reply(aliceSlack, "1700000000.000200", "hello").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	eph = h.fake.WaitEphemerals(2, 10*time.Second)
	if len(eph) != 2 || !strings.Contains(eph[1].Text, "deactivated") {
		t.Fatalf("ephemerals: %+v", eph)
	}
}

func TestStoreFailureIsRetried(t *testing.T) {
	h := newHarness(t, options{})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	body := reply(aliceSlack, "1700000000.000100", "after the outage").Payload()
	h.store.Close() // the store is gone: nothing can be committed
	if code, _ := h.post(body, time.Now(), 0); code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d, want 503 so that Slack retries", code)
	}
}
