package storetest

import (
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// testTemplateMessage: a KindTemplate message (an agent's reply that is a
// provider-approved template, named in Text) is stored, delivered through the
// outbox and read back like any other outgoing message.
func testTemplateMessage(t *testing.T, s core.Store) {
	in := ingest(t, s, "wa", "8613800000000", "hi", t0)
	m := agentText(1, "reopen", at(25*time.Hour))
	m.Kind, m.Status = core.KindTemplate, core.MsgPending
	res, err := s.Append(ctx, core.Append{ConversationID: in.Conversation.ID, Message: m, Deliver: true})
	if err != nil {
		t.Fatalf("Append(template): %v", err)
	}
	if res.Outbox == nil || res.Outbox.MessageID != res.Message.ID {
		t.Fatalf("template not enqueued: %+v", res.Outbox)
	}
	got, err := s.Message(ctx, res.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != core.KindTemplate || got.Text != "reopen" || !got.Outgoing() || got.Status != core.MsgPending {
		t.Fatalf("template read back as %+v", got)
	}
	if err := s.FinishOutbox(ctx, res.Outbox.ID, &core.StatusUpdate{Status: core.MsgSent, ExternalID: "wamid.T1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.MessageByExternalID(ctx, "wa", "wamid.T1"); err != nil || got.ID != res.Message.ID || got.Kind != core.KindTemplate {
		t.Fatalf("MessageByExternalID = %+v, %v", got, err)
	}
}
