package slack_test

import (
	"context"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

func TestSocketMode(t *testing.T) {
	h := newHarness(t, options{socket: true})
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	h.mapThread(conv.ID, "1700000000.000100")
	waitFor(t, "a Socket Mode connection", func() bool { return h.fake.Sockets() > 0 })

	// An agent's reply: stored, then acknowledged.
	env := h.fake.SendEnvelope(reply(aliceSlack, "1700000000.000100", "hello over the socket").Payload(), 0)
	if !h.fake.WaitAck(env, 10*time.Second) {
		t.Fatal("envelope not acknowledged")
	}
	ms := h.messages(conv.ID)
	if last := ms[len(ms)-1]; last.Text != "hello over the socket" || last.SenderID != h.alice.ID || last.Visibility != core.Public {
		t.Fatalf("messages: %+v", ms)
	}

	// Slack sends it again (retry_attempt 1) with the same event id: acked, stored once.
	payload := reply(aliceSlack, "1700000000.000100", "once").Payload()
	for retry := range 2 {
		if env := h.fake.SendEnvelope(payload, retry); !h.fake.WaitAck(env, 10*time.Second) {
			t.Fatal("envelope not acknowledged")
		}
	}
	n := 0
	for _, m := range h.messages(conv.ID) {
		if m.Text == "once" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("stored %d times", n)
	}

	// An unmapped user: acked, nothing stored, an ephemeral explanation.
	env = h.fake.SendEnvelope(reply(strangerSlack, "1700000000.000100", "me?").Payload(), 0)
	if !h.fake.WaitAck(env, 10*time.Second) {
		t.Fatal("envelope not acknowledged")
	}
	if eph := h.fake.WaitEphemerals(1, 10*time.Second); len(eph) != 1 || eph[0].User != strangerSlack {
		t.Fatalf("ephemerals: %+v", eph)
	}

	// An event type slack-go cannot parse is acknowledged too, so that
	// Slack does not send it again and again.
	env = h.fake.SendEnvelope([]byte(`{"type":"event_callback","event_id":"EvX","event":{"type":"brand_new_event"}}`), 0)
	if !h.fake.WaitAck(env, 10*time.Second) {
		t.Fatal("unknown event not acknowledged")
	}
	if h.ch.Check(context.Background()) != nil {
		t.Fatal("channel not ready")
	}
}
