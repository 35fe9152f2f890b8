package core_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// A reply the customer's channel refuses for good shows in its
// conversation's log as an internal event naming its author and the
// reason, once however often the failure is reported, also after the
// conversation was closed.
func TestFailedReplyIsReportedInTheLog(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0)
	ctx := context.Background()
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("alice", "1", "hi").Conversation
	reply, err := f.svc.Reply(ctx, a.ID, c.ID, core.Message{Kind: core.KindText, Text: "here is your refund link"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	f.notes.take()
	for range 2 { // a provider's status webhook repeated, its text as every store keeps it
		if _, err := f.svc.UpdateStatus(ctx, core.StatusUpdate{MessageID: reply.ID, Status: core.MsgFailed, Reason: "the user\x00 blocked the bot\xff"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(failedEvents(t, f, c.ID)); n != 1 {
		t.Fatalf("%d delivery_failed events after the status update, want 1", n)
	}
	// The outbox reporting the same failure adds nothing.
	stored, err := f.store.Message(ctx, reply.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := core.ReportDeliveryFailure(ctx, f.store, f.notes, stored, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	events := failedEvents(t, f, c.ID)
	if len(events) != 1 {
		t.Fatalf("%d delivery_failed events, want 1", len(events))
	}
	if e := events[0]; e.Visibility != core.Internal || e.Event.AgentID != a.ID || e.Text != "the user blocked the bot\uFFFD" || e.ID < reply.ID {
		t.Fatalf("event %+v (%+v)", e, *e.Event)
	}
	var published int
	for _, u := range f.notes.take() {
		if u.Type == core.UpdateMessage && u.Message != nil && u.Message.ID == events[0].ID {
			published++
		}
	}
	if published != 1 {
		t.Fatalf("the event was published %d times, want 1", published)
	}
	// A customer's message, or one not failed, is no delivery failure.
	in := f.say("alice", "2", "hello?").Message
	in.Status = core.MsgFailed
	f.notes.take()
	if err := core.ReportDeliveryFailure(ctx, f.store, f.notes, in, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.notes.take()); n != 0 {
		t.Fatalf("%d updates for a customer's message", n)
	}
}

// take returns and forgets the updates published so far.
func (r *recorder) take() []core.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	ups := r.updates
	r.updates = nil
	return ups
}

// failedEvents returns conversation id's delivery_failed events.
func failedEvents(t *testing.T, f *fixture, id int64) []core.Message {
	t.Helper()
	ms, err := f.store.Messages(context.Background(), core.MessageQuery{ConversationID: id, BeforeSeq: math.MaxInt64, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var events []core.Message
	for _, m := range ms {
		if m.Event != nil && m.Event.Type == core.EventDeliveryFailed {
			events = append(events, m)
		}
	}
	return events
}

// A resolved conversation whose customer has started a newer one cannot be
// reopened, with an error that says why (not the store's constraint).
func TestReopenRefusedWhileANewerConversationIsOpen(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, ReopenWithin: time.Minute}, 1, 0)
	ctx := context.Background()
	a := f.agents[0]
	old := f.say("alice", "1", "hi").Conversation
	if _, err := f.svc.Close(ctx, a.ID, old.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	if newer := f.say("alice", "2", "me again").Conversation; newer.ID == old.ID {
		t.Fatal("the customer's message after reopen_within reopened the old conversation")
	}
	_, err := f.svc.Reopen(ctx, a.ID, old.ID)
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "newer conversation (#2, pending)") || strings.Contains(err.Error(), "sqlite") {
		t.Fatalf("reopen = %v, want a conflict saying a newer conversation is open", err)
	}
	if c := f.conv(old.ID); c.Status != core.StatusResolved {
		t.Fatalf("the old conversation is %s", c.Status)
	}
}

// Only a customer's newest conversation reopens, even when it is resolved
// too: a web visitor's app resumes from its newest conversation, so a
// reply in an older one would reach it only while connected, and the
// customer's next message would go to the newest.
func TestOnlyTheNewestConversationReopens(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, ReopenWithin: time.Minute}, 1, 0)
	ctx := context.Background()
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	first := f.say("alice", "1", "hi").Conversation
	if _, err := f.svc.Close(ctx, a.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	second := f.say("alice", "2", "another question").Conversation
	if _, err := f.svc.Close(ctx, a.ID, second.ID); err != nil {
		t.Fatal(err)
	}
	before := f.conv(first.ID).LastSeq
	if _, err := f.svc.Reopen(ctx, a.ID, first.ID); !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "(#2, resolved)") {
		t.Errorf("reopening the older = %v, want a conflict naming #2", err)
	}
	_, err := f.svc.Reply(ctx, a.ID, first.ID, core.Message{Kind: core.KindText, Text: "about your first question"})
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "reply there") {
		t.Errorf("replying in the older = %v, want a conflict", err)
	}
	if c := f.conv(first.ID); c.Status != core.StatusResolved || c.LastSeq != before {
		t.Errorf("the older conversation changed: %s, last seq %d (was %d)", c.Status, c.LastSeq, before)
	}
	// The newest reopens, and a note in the older one is still fine.
	if _, err := f.svc.Reopen(ctx, a.ID, second.ID); err != nil {
		t.Errorf("reopening the newest: %v", err)
	}
	if _, err := f.svc.Note(ctx, a.ID, first.ID, core.Message{Kind: core.KindText, Text: "see #2"}); err != nil {
		t.Errorf("a note in the older: %v", err)
	}
}

// appendFails fails the next Append calls.
type appendFails struct {
	core.Store
	fails int
}

func (s *appendFails) Append(ctx context.Context, a core.Append) (core.Appended, error) {
	if s.fails > 0 {
		s.fails--
		return core.Appended{}, errors.New("database is locked")
	}
	return s.Store.Append(ctx, a)
}

// A report that could not be written is finished when the provider
// repeats the failure.
func TestFailureReportFinishedByARepeat(t *testing.T) {
	var wrapped *appendFails
	f := newWrappedFixture(t, core.Config{Strategy: core.LeastBusy, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { wrapped = &appendFails{Store: s}; return wrapped })
	ctx := context.Background()
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("alice", "1", "hi").Conversation
	reply, err := f.svc.Reply(ctx, a.ID, c.ID, core.Message{Kind: core.KindText, Text: "here"})
	if err != nil {
		t.Fatal(err)
	}
	wrapped.fails = 1
	u := core.StatusUpdate{MessageID: reply.ID, Status: core.MsgFailed, Reason: "blocked"}
	if _, err := f.svc.UpdateStatus(ctx, u); err != nil {
		t.Fatal(err)
	}
	if n := len(failedEvents(t, f, c.ID)); n != 0 {
		t.Fatalf("%d events after a failed append", n)
	}
	if _, err := f.svc.UpdateStatus(ctx, u); err != nil {
		t.Fatal(err)
	}
	ev := failedEvents(t, f, c.ID)
	if len(ev) != 1 {
		t.Fatalf("%d events after the repeat, want 1", len(ev))
	}
	if id, ok := core.FailedMessageID(ev[0]); !ok || id != reply.ID {
		t.Fatalf("the event names message %d (%v), want %d", id, ok, reply.ID)
	}
}
