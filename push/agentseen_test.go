package push

import (
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// At a hand-over without a cursor, a pending push to the assignee does not
// go out when the store shows the message read (its receipt's update never
// reached this run), as on the customer's side
// (TestHandOverWaitsForAcknowledgement).
func TestHandOverAgentSideChecksTheStore(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	release := h.presence.Connect(h.alice.ID)
	defer release()
	tn := h.startTenure()
	m := h.customerSays("hello?")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(fallbackAfter))
	if _, err := h.store.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgRead}); err != nil {
		t.Fatal(err)
	}
	if err := tn.stop(DefaultStopGrace / 2); err != nil {
		t.Fatal(err)
	}
	if got := h.pusher.got(); len(got) != 0 {
		t.Fatalf("Alice pushed %d times at the hand-over for a message the store shows she read", len(got))
	}
}

// With a cursor, a run's catch-up does not push the assignee a message the
// store shows read (read while no run was going).
func TestCatchUpAgentSideChecksTheStore(t *testing.T) {
	h := newHarness(t)
	h.withCursor()
	c := h.conversation()
	tn := h.startTenure()
	m := h.customerSays("hello?")
	tn.feed()
	tn.waitArmed(h.clock.Now().Add(collapse))
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if len(h.pusher.got()) != 0 {
		t.Fatal("pushed before the stop")
	}
	// Between tenures Alice reads it in her console.
	release := h.presence.Connect(h.alice.ID)
	defer release()
	if _, err := h.store.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgRead}); err != nil {
		t.Fatal(err)
	}
	h.rec.take()
	tn = h.startTenure()
	tn.waitArmed(h.clock.Now().Add(fallbackAfter))
	h.clock.Advance(fallbackAfter)
	waitFor(t, "the push or its skip", func() bool { return len(h.pusher.got()) > 0 || h.skipped("seen") > 0 })
	if err := tn.stop(0); err != nil {
		t.Fatal(err)
	}
	if got := h.pusher.got(); len(got) != 0 {
		t.Fatalf("catch-up pushed Alice %d times for a message the store shows she read", len(got))
	}
}

// A new tenure (Fallback.reset) forgets the waiting messages too: one that
// waited in an earlier tenure is not pushed much later to whoever the
// conversation is transferred to, though it was taken and answered
// meanwhile.
func TestWaitingIsForgottenAtReset(t *testing.T) {
	h := newHarness(t)
	bob, err := h.store.CreateAgent(h.ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, Active: true, PasswordHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.RegisterDevice(h.ctx, core.Device{Token: token(9), Owner: core.AgentDevices(bob.ID)}); err != nil {
		t.Fatal(err)
	}
	in, err := h.svc.Ingest(h.ctx, core.Inbound{Channel: "web", ExternalID: "u:8", Name: "Wang Wu",
		Message: core.Message{Kind: core.KindText, Text: "hello?"}})
	if err != nil {
		t.Fatal(err)
	}
	h.advance(time.Minute) // tenure 1 sees the waiting message
	h.f.reset()            // tenure 1 ends; another node holds the lease a while
	release := h.presence.Connect(h.alice.ID)
	if _, err := h.svc.Take(h.ctx, h.alice.ID, in.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Reply(h.ctx, h.alice.ID, in.Conversation.ID, core.Message{Kind: core.KindText, Text: "hi, how can I help?"}); err != nil {
		t.Fatal(err)
	}
	h.rec.take() // seen by the other node's run, not this one
	release()
	h.clock.Advance(time.Hour)
	// This node runs again; Alice hands the conversation to Bob.
	if _, err := h.svc.Transfer(h.ctx, h.alice.ID, in.Conversation.ID, bob.ID); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	for _, n := range h.pusher.got() {
		if n.MessageID == in.Message.ID {
			t.Fatalf("Bob pushed %q, a message from an hour before that Alice answered (stale f.waiting after reset)", n.Body)
		}
	}
}
