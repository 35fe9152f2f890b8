package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// An agent sends a conversation back to the queue; the customer writes
// again while that agent is online with room and nobody else is: the
// customer is not told that all agents are at capacity ("busy"), which is
// not so (busy_reply: "agents are online but all at max_open_per_agent").
func TestNoBusyReplyForADeclinedConversation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour,
		OfflineReply: "We are away", BusyReply: "All our agents are busy. You are number {position}."}, 1, 0)
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if f.conv(c.ID).AssigneeID != a.ID {
		t.Fatal("setup")
	}
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil {
		t.Fatal(err)
	}
	f.say("c", "2", "hello? anyone?")
	counts, _ := f.store.OpenCounts(ctx)
	if got := f.botTexts(c.ID); len(got) > 0 {
		t.Fatalf("agent %d is available with %d/8 open, yet the customer was told %q", a.ID, counts[a.ID], got)
	}
}

// The decline of an agent who sent a conversation back ends when the
// conversation is served (docs/api.md, transfer), by a take too: when the
// conversation later comes back to the queue (its agent deactivated),
// routing does not keep it from the first agent, who is online with room.
func TestDeclineEndsWithATake(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 2, 0)
	admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "root@example.com", Name: "Root", Role: core.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	a, b := f.agents[0], f.agents[1]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if f.conv(c.ID).AssigneeID != a.ID {
		t.Fatal("setup")
	}
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil { // a: "someone else, please"
		t.Fatal(err)
	}
	if _, err := f.svc.Take(ctx, b.ID, c.ID); err != nil { // b takes it: served
		t.Fatal(err)
	}
	f.clock.Advance(10 * time.Minute)
	// b leaves the company: their customers go back to the queue.
	if _, err := f.svc.UpdateAgent(ctx, admin.ID, b.ID, core.AgentChange{Active: new(false)}); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); now.Status != core.StatusOpen || now.AssigneeID != a.ID {
		counts, _ := f.store.OpenCounts(ctx)
		t.Fatalf("b deactivated: #%d is %s with %d; a (available, %d/8 open) is the only agent", c.ID, now.Status, now.AssigneeID, counts[a.ID])
	}
}

// The same, reached through a reopening: a sends x back, b takes and
// closes it, b is deactivated, and the customer writes again: x goes back
// to the queue (its agent is gone) and to a, who is idle.
func TestDeclineEndsWithATakeReopened(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 2, 0)
	admin, _ := f.store.CreateAgent(ctx, core.Agent{Email: "root@example.com", Name: "Root", Role: core.RoleAdmin, Active: true})
	a, b := f.agents[0], f.agents[1]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Reply(ctx, b.ID, c.ID, core.Message{Kind: core.KindText, Text: "I'll help"}); err != nil { // takes it
		t.Fatal(err)
	}
	if _, err := f.svc.Close(ctx, b.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.UpdateAgent(ctx, admin.ID, b.ID, core.AgentChange{Active: new(false)}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(20 * time.Minute)
	f.say("c", "2", "one more question")
	if now := f.conv(c.ID); now.AssigneeID != a.ID {
		t.Fatalf("customer came back: #%d is %s with %d; a is available and idle", c.ID, now.Status, now.AssigneeID)
	}
}
