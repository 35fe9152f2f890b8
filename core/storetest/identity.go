package storetest

import (
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

func testMoveIdentity(t *testing.T, s core.Store) {
	// Two conversations of tg/100 (the first resolved long ago), another
	// customer on the same channel, and the same id on another channel.
	first := ingest(t, s, "tg", "100", "one", t0)
	if _, err := setStatus(s, first.Conversation.ID, core.StatusResolved, "", at(time.Second)); err != nil {
		t.Fatal(err)
	}
	second := ingest(t, s, "tg", "100", "two", at(2*time.Hour))
	if second.Conversation.ID == first.Conversation.ID || second.Contact.ID != first.Contact.ID {
		t.Fatalf("setup: second conversation %+v", second)
	}
	other := ingest(t, s, "tg", "200", "hi", t0)
	elsewhere := ingest(t, s, "wa", "100", "hi", t0)

	if err := s.MoveIdentity(ctx, "tg", "100", "-100200"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{first.Conversation.ID, second.Conversation.ID} {
		if c := conversation(t, s, id); c.ExternalID != "-100200" || c.Channel != "tg" || c.ContactID != first.Contact.ID {
			t.Errorf("conversation %d after the move = %+v", id, c)
		}
	}
	// What the store writes next sees the new id too.
	app := appendMsg(t, s, second.Conversation.ID, agentText(1, "reply", at(3*time.Hour)))
	if app.Conversation.ExternalID != "-100200" {
		t.Errorf("append after the move: conversation %+v", app.Conversation)
	}
	// The customer's next message from the new id continues the conversation.
	next := ingest(t, s, "tg", "-100200", "three", at(4*time.Hour))
	if next.NewContact || next.NewConversation || next.Conversation.ID != second.Conversation.ID ||
		next.Contact.ID != first.Contact.ID {
		t.Errorf("message from the new id: %+v", next)
	}
	// The old id is free: a message from it is somebody new.
	if again := ingest(t, s, "tg", "100", "who?", at(5*time.Hour)); !again.NewContact || again.Contact.ID == first.Contact.ID {
		t.Errorf("message from the old id: %+v", again)
	}
	// Nothing else moved.
	if c := conversation(t, s, other.Conversation.ID); c.ExternalID != "200" {
		t.Errorf("another identity's conversation = %+v", c)
	}
	if c := conversation(t, s, elsewhere.Conversation.ID); c.ExternalID != "100" || c.Channel != "wa" {
		t.Errorf("another channel's conversation = %+v", c)
	}

	wantErr(t, "moving a missing identity", s.MoveIdentity(ctx, "tg", "404", "405"), core.ErrNotFound)
	wantErr(t, "moving onto an existing identity", s.MoveIdentity(ctx, "tg", "200", "-100200"), core.ErrConflict)
	if c := conversation(t, s, other.Conversation.ID); c.ExternalID != "200" {
		t.Errorf("a refused move changed %+v", c)
	}
	if err := s.MoveIdentity(ctx, "tg", "200", "200"); err != nil {
		t.Errorf("moving an identity onto itself = %v, want nil", err)
	}
	wantErr(t, "moving without ids", s.MoveIdentity(ctx, "tg", "", "1"), core.ErrInvalid)
}
