package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Reopen and a transfer back to the queue answer the conversation as
// routing left it (the API's 200 body), not as it was before routing.
func TestAnswersShowTheConversationAsRouted(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0)
	a := f.agents[0]
	c := f.say("c", "1", "hi").Conversation // waits: nobody online
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	defer f.presence.Connect(a.ID)()
	got, err := f.svc.Reopen(ctx, a.ID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); got.Status != now.Status || got.AssigneeID != now.AssigneeID || now.AssigneeID != a.ID {
		t.Errorf("Reopen answered %s/%d, the conversation is %s/%d", got.Status, got.AssigneeID, now.Status, now.AssigneeID)
	}
	// The only agent sends it back to the queue: routing gives it back.
	got, err = f.svc.Transfer(ctx, a.ID, c.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); got.Status != now.Status || got.AssigneeID != now.AssigneeID {
		t.Errorf("Transfer answered %s/%d, the conversation is %s/%d", got.Status, got.AssigneeID, now.Status, now.AssigneeID)
	}
}

// A customer who writes again after their conversation was closed, while
// nobody is available, gets the offline reply; the conversation stays with
// its agent, and a second reopening is answered again.
func TestReopenedWhileNobodyIsAvailableGetsTheOfflineReply(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: 168 * time.Hour,
		OfflineReply: "We are away"}, 1, 0)
	a := f.agents[0]
	release := f.presence.Connect(a.ID)
	c := f.say("c", "1", "hi").Conversation
	if _, err := f.svc.Reply(ctx, a.ID, c.ID, core.Message{Kind: core.KindText, Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	release()
	f.clock.Advance(10 * time.Hour)
	r := f.say("c", "2", "my parcel still has not arrived")
	if r.Conversation.ID != c.ID {
		t.Fatalf("a new conversation %d, want %d reopened", r.Conversation.ID, c.ID)
	}
	if got := f.botTexts(c.ID); len(got) != 1 || got[0] != "We are away" {
		t.Fatalf("bot messages %q, want the offline reply once", got)
	}
	if cur := f.conv(c.ID); cur.AssigneeID != a.ID || cur.Status != core.StatusOpen {
		t.Fatalf("the reopened conversation is %s with %d, want open with its agent", cur.Status, cur.AssigneeID)
	}
	f.say("c", "3", "hello?") // still open: no second reply
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	f.say("c", "4", "again")
	if n := f.botMessages(c.ID); n != 2 {
		t.Fatalf("%d bot messages after a second reopening, want 2", n)
	}
}
