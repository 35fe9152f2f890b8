package core_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
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
	// The only agent sends it back to the queue: it waits for another.
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

// An agent who sends a conversation back to the queue does not get it back
// from routing: it goes to another agent with room, or waits for one, and
// the queue behind it is still served.
func TestSentBackToTheQueueGoesToAnotherAgent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 2, 0)
	a, b := f.agents[0], f.agents[1]
	releaseA := f.presence.Connect(a.ID)
	defer releaseA()
	c1 := f.say("c1", "1", "hi").Conversation
	if f.conv(c1.ID).AssigneeID != a.ID {
		t.Fatal("setup: c1 is not a's")
	}
	// a is the only agent: sent back, c1 waits rather than bounce back,
	// and a newcomer is still routed to a.
	got, err := f.svc.Transfer(ctx, a.ID, c1.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c1.ID); now.AssigneeID != 0 || now.Status != core.StatusPending || got.AssigneeID != 0 {
		t.Fatalf("sent back by the only agent: %s with %d (answered %d), want waiting", now.Status, now.AssigneeID, got.AssigneeID)
	}
	c2 := f.say("c2", "2", "hello").Conversation
	if now := f.conv(c2.ID); now.AssigneeID != a.ID {
		t.Fatalf("a newcomer behind the declined conversation is %s with %d, want a's", now.Status, now.AssigneeID)
	}
	// b comes online: c1 goes to b.
	defer f.presence.Connect(b.ID)()
	if err := f.svc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c1.ID); now.AssigneeID != b.ID {
		t.Fatalf("with b online, c1 is %s with %d, want b's", now.Status, now.AssigneeID)
	}
	// And b sending it back with a free: it goes to a.
	if _, err := f.svc.Transfer(ctx, b.ID, c1.ID, 0); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c1.ID); now.AssigneeID != a.ID {
		t.Fatalf("sent back by b, c1 is %s with %d, want a's", now.Status, now.AssigneeID)
	}
}

// An admin deactivates an agent while the others are busy: the customers
// the agent was serving go back to the queue in their place, ahead of those
// who came after them.
func TestDeactivatedAgentsCustomersKeepTheirPlace(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 1, ReopenWithin: time.Hour}, 2, 0)
	admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "admin@example.com", Name: "Admin", Role: core.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.presence.Connect(f.agents[0].ID)()
	defer f.presence.Connect(f.agents[1].ID)()
	f.clock.Advance(time.Second)
	x := f.say("x", "1", "first").Conversation
	f.clock.Advance(time.Second)
	f.say("y", "2", "second")
	f.clock.Advance(time.Second)
	z := f.say("z", "3", "third").Conversation // waits: both agents are full
	f.clock.Advance(time.Second)
	if _, err := f.svc.UpdateAgent(ctx, admin.ID, f.conv(x.ID).AssigneeID, core.AgentChange{Active: new(false)}); err != nil {
		t.Fatal(err)
	}
	q, err := f.store.Queue(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].ID != x.ID || q[1].ID != z.ID {
		var ids []int64
		for _, c := range q {
			ids = append(ids, c.ID)
		}
		t.Fatalf("queue %v, want x (%d) before z (%d)", ids, x.ID, z.ID)
	}
}

// A conversation sent back to the queue stays away from the agent who sent
// it when the agent it was planned for is refused by the store (deactivated
// on another node): the decline lasts until it is served.
func TestDeclineOutlivesARefusedAssignment(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 2, 0)
	a, b := f.agents[0], f.agents[1]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil {
		t.Fatal(err)
	}
	b.Active = false // in the store only, as another node did
	if err := storetest.UpdateAgent(f.store, b); err != nil {
		t.Fatal(err)
	}
	defer f.presence.Connect(b.ID)()
	if err := f.svc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); now.AssigneeID == a.ID {
		t.Fatal("declined by a, given back to a after b was refused")
	}
}

// Once the decline has run out, the conversation is routed again by Run,
// even to the agent who sent it back, if they are the only one with room.
func TestDeclinedConversationRoutedWhenTheDeclineEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour, Redrain: 10 * time.Millisecond}, 1, 0)
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = f.svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	f.clock.Advance(2 * time.Hour)
	waitFor(func() bool { return f.conv(c.ID).AssigneeID == a.ID })
	if now := f.conv(c.ID); now.AssigneeID != a.ID {
		t.Fatalf("after the decline ended, c is %s with %d, want a's", now.Status, now.AssigneeID)
	}
}

// More conversations sent back by the only agent than a drain reads at once
// (a page of the queue) do not hold back the customers behind them.
func TestAPageOfDeclinedConversationsDoesNotHoldBackTheQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 500, ReopenWithin: time.Hour}, 1, 0)
	a := f.agents[0]
	var declined []int64
	for i := range 130 {
		id := fmt.Sprint(i)
		declined = append(declined, f.say("d"+id, id, "hi").Conversation.ID) // waiting: nobody online
		f.clock.Advance(time.Millisecond)
	}
	defer f.presence.Connect(a.ID)()
	if err := f.svc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range declined {
		if _, err := f.svc.Transfer(ctx, a.ID, id, 0); err != nil {
			t.Fatal(err)
		}
	}
	c := f.say("c", "x", "hello").Conversation
	if now := f.conv(c.ID); now.AssigneeID != a.ID {
		t.Fatalf("behind %d declined conversations, a newcomer is %s with %d, want a's", len(declined), now.Status, now.AssigneeID)
	}
}

// A conversation sent back to the queue on one node is not given back to
// its agent by another node's routing either; once served, the decline is
// gone from the store.
func TestSentBackToTheQueueOnAnotherNode(t *testing.T) {
	ctx := context.Background()
	cfg := core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}
	f := newFixture(t, cfg, 2, 0) // node 1
	a, b := f.agents[0], f.agents[1]
	presence2 := core.NewMemoryPresence()
	node2 := core.NewService(cfg, core.Deps{Store: f.store, Presence: presence2, Notifier: f.notes, Now: f.clock.Now})
	defer f.presence.Connect(a.ID)()
	defer presence2.Connect(a.ID)() // node 2 sees a online too
	c := f.say("c", "1", "hi").Conversation
	if f.conv(c.ID).AssigneeID != a.ID {
		t.Fatal("setup: c is not a's")
	}
	if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil { // on node 1
		t.Fatal(err)
	}
	if err := node2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); now.AssigneeID == a.ID {
		t.Fatal("node 2 gave the conversation back to the agent who sent it back on node 1")
	}
	// b comes online on node 2: it serves c there, and the decline ends.
	defer presence2.Connect(b.ID)()
	if err := node2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); now.AssigneeID != b.ID {
		t.Fatalf("with b online on node 2, c is %s with %d, want b's", now.Status, now.AssigneeID)
	}
	if left, err := f.store.Settings(ctx, "routing.declined.", "", 10); err != nil || len(left) != 0 {
		t.Errorf("declines left in the store after the conversation was served: %v, %v", left, err)
	}
}
