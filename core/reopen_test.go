package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// An agent replying to a resolved conversation nobody had taken gets it:
// the queue neither gives it to another agent nor tells the customer, just
// before the agent's reply, that nobody is there.
func TestReplyToResolvedUnassignedTakesIt(t *testing.T) {
	for _, other := range []bool{false, true} {
		name := map[bool]string{false: "nobody available", true: "another agent available"}[other]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 5, ReopenWithin: time.Hour,
				OfflineReply: "We are away"}, 2, 0)
			a0, a1 := f.agents[0].ID, f.agents[1].ID
			y := f.say("y", "1", "spam?")
			if c := f.conv(y.Conversation.ID); c.Status != core.StatusPending {
				t.Fatalf("conversation %+v, want waiting", c)
			}
			bots := f.botMessages(y.Conversation.ID)
			if _, err := f.svc.Close(ctx, a0, y.Conversation.ID); err != nil {
				t.Fatal(err)
			}
			if other {
				f.presence.Connect(a0)
			}
			if _, err := f.svc.Reply(ctx, a1, y.Conversation.ID, core.Message{Kind: core.KindText, Text: "sorry, how can I help?"}); err != nil {
				t.Fatal(err)
			}
			if c := f.conv(y.Conversation.ID); c.AssigneeID != a1 || c.Status != core.StatusOpen {
				t.Errorf("after agent %d's reply: %s, assignee %d; want open with them", a1, c.Status, c.AssigneeID)
			}
			if n := f.botMessages(y.Conversation.ID); n != bots {
				t.Errorf("automatic replies with the agent's: %q", f.botTexts(y.Conversation.ID)[bots:])
			}
		})
	}
}

// A resolved conversation whose agent has been deactivated since does not
// go back to them when an agent reopens it or replies to it (the customer
// reopening it already did not): the reply takes it, a reopen routes it.
func TestReopenLeavesADeactivatedAgent(t *testing.T) {
	for _, reply := range []bool{false, true} {
		name := map[bool]string{false: "reopen", true: "reply"}[reply]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 5, ReopenWithin: time.Hour}, 3, 0)
			admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "admin@example.com", Role: core.RoleAdmin, Active: true})
			if err != nil {
				t.Fatal(err)
			}
			a0, a1, a2 := f.agents[0].ID, f.agents[1].ID, f.agents[2].ID
			y := f.say("y", "1", "hello")
			if _, err := f.svc.Take(ctx, a0, y.Conversation.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Close(ctx, a0, y.Conversation.ID); err != nil {
				t.Fatal(err)
			}
			off := false
			if _, err := f.svc.UpdateAgent(ctx, admin.ID, a0, core.AgentChange{Active: &off}); err != nil {
				t.Fatal(err)
			}
			f.presence.Connect(a2) // available: the queue's pick
			want := a2
			if reply {
				want = a1
				_, err = f.svc.Reply(ctx, a1, y.Conversation.ID, core.Message{Kind: core.KindText, Text: "anything else?"})
			} else {
				_, err = f.svc.Reopen(ctx, a1, y.Conversation.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			if c := f.conv(y.Conversation.ID); c.AssigneeID != want || c.Status != core.StatusOpen {
				t.Errorf("after the %s: %s, assignee %d; want open with %d (agent %d is deactivated)", name, c.Status, c.AssigneeID, want, a0)
			}
		})
	}
}

// Two nodes share a store; this node's presence has not heard yet that
// the other deactivated agent 1. Its drain must not give agent 1 a
// conversation: the store refuses, and the drain goes on without them
// (with or without a limit per agent).
func TestDrainSkipsAnAgentDeactivatedElsewhere(t *testing.T) {
	for _, maxOpen := range []int{5, 0} {
		t.Run(fmt.Sprint("max open ", maxOpen), func(t *testing.T) {
			ctx := context.Background()
			cfg := core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: maxOpen, ReopenWithin: time.Hour}
			f := newFixture(t, cfg, 2, 0)
			admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "admin@example.com", Role: core.RoleAdmin, Active: true})
			if err != nil {
				t.Fatal(err)
			}
			a0, a1 := f.agents[0].ID, f.agents[1].ID
			other := core.NewService(cfg, core.Deps{Store: f.store, Presence: core.NewMemoryPresence(), Notifier: &recorder{}})
			f.presence.Connect(a0)
			if c := f.conv(f.say("x", "1", "first").Conversation.ID); c.AssigneeID != a0 {
				t.Fatalf("first conversation %+v, want agent %d's", c, a0)
			}
			f.presence.Connect(a1) // agent 0 has one: least busy picks agent 1 next
			off := false
			if _, err := other.UpdateAgent(ctx, admin.ID, a1, core.AgentChange{Active: &off}); err != nil {
				t.Fatal(err)
			}
			said := make(chan core.Ingested, 1)
			go func() { said <- f.say("y", "2", "hello") }()
			var y core.Ingested
			select {
			case y = <-said:
			case <-time.After(30 * time.Second):
				t.Fatal("the drain did not end")
			}
			if c := f.conv(y.Conversation.ID); c.AssigneeID != a0 {
				t.Errorf("conversation %s with agent %d, want agent %d (agent %d is deactivated)", c.Status, c.AssigneeID, a0, a1)
			}
		})
	}
}

// failUnassign fails the next unassignment once.
type failUnassign struct {
	core.Store
	fail bool
}

func (s *failUnassign) Assign(ctx context.Context, a core.Assignment) (core.Changed, error) {
	if a.AgentID == 0 && s.fail {
		s.fail = false
		return core.Changed{}, errors.New("connection reset")
	}
	return s.Store.Assign(ctx, a)
}

// A deactivation that failed part way (the agent stored inactive, their
// conversations not yet back in the queue) is finished by trying again.
func TestDeactivationTriedAgainFinishes(t *testing.T) {
	ctx := context.Background()
	var w *failUnassign
	f := newWrappedFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 5, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { w = &failUnassign{Store: s}; return w })
	admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "admin@example.com", Role: core.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	a0 := f.agents[0].ID
	y := f.say("y", "1", "hello")
	if _, err := f.svc.Take(ctx, a0, y.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	w.fail = true
	off := false
	if _, err := f.svc.UpdateAgent(ctx, admin.ID, a0, core.AgentChange{Active: &off}); err == nil {
		t.Fatal("the deactivation did not fail")
	}
	if _, err := f.svc.UpdateAgent(ctx, admin.ID, a0, core.AgentChange{Active: &off}); err != nil {
		t.Fatal(err)
	}
	if ag, _ := f.store.Agent(ctx, a0); ag.Active {
		t.Error("the agent is active")
	}
	if c := f.conv(y.Conversation.ID); c.AssigneeID != 0 || c.Status != core.StatusPending {
		t.Errorf("the deactivated agent's conversation: %s, assignee %d; want back in the queue", c.Status, c.AssigneeID)
	}
}

// Sending a waiting conversation "back to the queue" changes nothing: it
// is not moved behind those that came after it.
func TestTransferOfAWaitingConversationToTheQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 5, ReopenWithin: time.Hour}, 1, 0)
	admin, err := f.store.CreateAgent(ctx, core.Agent{Email: "admin@example.com", Role: core.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	y := f.say("y", "1", "first")
	f.clock.Advance(time.Second)
	z := f.say("z", "2", "second")
	if c, err := f.svc.Transfer(ctx, admin.ID, y.Conversation.ID, 0); err != nil || c.Status != core.StatusPending {
		t.Errorf("Transfer to the queue of a waiting conversation: %+v, %v; want it as it is", c, err)
	}
	if got := f.conv(y.Conversation.ID); got.LastSeq != y.Conversation.LastSeq {
		t.Errorf("the transfer added %d events", got.LastSeq-y.Conversation.LastSeq)
	}
	q, err := f.store.Queue(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].ID != y.Conversation.ID || q[1].ID != z.Conversation.ID {
		t.Errorf("queue %v, want %d then %d", q, y.Conversation.ID, z.Conversation.ID)
	}
}

// ReplyAsOwner refuses a conversation that is another agent's before it
// does anything: a resolved one of theirs is not reopened for a reply that
// is then refused.
func TestReplyAsOwnerRefusesBeforeReopening(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 5, ReopenWithin: time.Hour}, 2, 0)
	a0, a1 := f.agents[0].ID, f.agents[1].ID
	y := f.say("y", "1", "hello")
	if _, err := f.svc.Take(ctx, a0, y.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Close(ctx, a0, y.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	before := f.conv(y.Conversation.ID)
	if before.AssigneeID != a0 {
		t.Fatalf("a resolved conversation keeps its assignee: got %d, want %d", before.AssigneeID, a0)
	}
	_, err := f.svc.ReplyAsOwner(ctx, a1, y.Conversation.ID, core.Message{Kind: core.KindText, Text: "me too"})
	if !errors.Is(err, core.ErrConflict) {
		t.Fatalf("ReplyAsOwner to another's resolved conversation: %v, want a conflict", err)
	}
	if c := f.conv(y.Conversation.ID); c.Status != core.StatusResolved || c.LastSeq != before.LastSeq {
		t.Errorf("after the refused reply: %s, last seq %d (was %d); want it untouched", c.Status, c.LastSeq, before.LastSeq)
	}
}
