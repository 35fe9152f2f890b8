package push

import (
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Alice is available (Work WeChat /on) with no socket; her phone has the
// agents' app. A new customer's first message is routed to her at once:
// its update carries the conversation before routing assigned it, and she
// is still pushed for it.
func TestFirstMessageOfARoutedConversationIsPushed(t *testing.T) {
	h := newHarness(t)
	h.register(core.AgentDevices(h.alice.ID), 2)
	h.presence.SetOn(h.alice.ID, true)
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:7", Name: "Li Si",
		Message: core.Message{Kind: core.KindText, Text: "my parcel is broken"}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := h.store.Conversation(h.ctx, in.Conversation.ID); err != nil || c.AssigneeID != h.alice.ID {
		t.Fatalf("conversation %+v, %v: want it routed to Alice", c, err)
	}
	h.advance(time.Hour)
	got := h.pusher.got()
	if len(got) != 1 || got[0].MessageID != in.Message.ID || got[0].Body != "my parcel is broken" {
		t.Fatalf("Alice, assigned the new conversation at once, got %+v; want one push of its first message", got)
	}
}

// A conversation that waits in the queue is pushed to the agent it is
// given to later, unless that agent has a live socket (their console
// shows it); a resolved one is pushed to nobody.
func TestWaitingMessageIsPushedToTheAgentItIsGivenTo(t *testing.T) {
	h := newHarness(t)
	h.register(core.AgentDevices(h.alice.ID), 2)
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:8", Name: "Wang Wu",
		Message: core.Message{Kind: core.KindText, Text: "hello?"}})
	if err != nil {
		t.Fatal(err)
	}
	h.advance(time.Minute)
	if got := h.pusher.got(); len(got) != 0 {
		t.Fatalf("%d pushes while the conversation waits, want none", len(got))
	}
	if _, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	if got := h.pusher.got(); len(got) != 1 || got[0].MessageID != in.Message.ID {
		t.Fatalf("Alice, given the waiting conversation, got %+v; want one push of its message", got)
	}

	// Connected: her console shows it; no push.
	release := h.presence.Connect(h.alice.ID)
	defer release()
	in2, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:9", Name: "Zhao Liu",
		Message: core.Message{Kind: core.KindText, Text: "anyone?"}})
	if err != nil {
		t.Fatal(err)
	}
	h.advance(time.Second)
	if _, err := h.svc.Take(h.ctx, h.alice.ID, in2.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	if got := h.pusher.got(); len(got) != 1 {
		t.Fatalf("%d pushes in all; the connected assignee's take pushed again", len(got))
	}
}
