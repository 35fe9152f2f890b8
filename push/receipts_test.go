package push

import (
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Alice is assigned and has only her phone (no live socket). Bob, another
// agent, has the console open: it receives every conversation's messages
// and acknowledges each customer message (console/app.js ackDelivered).
// Bob having it is not Alice having it: she is still pushed.
func TestColleaguesReceiptDoesNotCancelTheAssigneesPush(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	bob, err := h.store.CreateAgent(h.ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, Active: true, PasswordHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	release := h.presence.Connect(bob.ID)
	defer release()

	m := h.customerSays("is anyone there?")
	h.advance(100 * time.Millisecond)
	if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgDelivered, AgentID: bob.ID}); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Hour)
	if got := h.pusher.got(); len(got) != 1 {
		t.Fatalf("Alice got %d pushes, want 1 (Bob's console is not Alice's); skipped acked=%v seen=%v",
			len(got), h.skipped("acked"), h.skipped("seen"))
	}
}

// The assignee's own receipt cancels their push, also when a colleague's
// receipt moved the message to delivered first (the store has nothing
// left to change for Alice's).
func TestAssigneesReceiptAfterAColleaguesCancelsThePush(t *testing.T) {
	h := newHarness(t)
	c := h.conversation()
	bob, err := h.store.CreateAgent(h.ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, Active: true, PasswordHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	m := h.customerSays("is anyone there?")
	h.advance(100 * time.Millisecond)
	for _, who := range []int64{bob.ID, h.alice.ID} {
		if err := h.svc.MarkUpTo(h.ctx, core.Receipt{ConversationID: c.ID, UpToSeq: m.Seq, Status: core.MsgDelivered, AgentID: who}); err != nil {
			t.Fatal(err)
		}
		h.advance(100 * time.Millisecond)
	}
	h.advance(time.Hour)
	if got := h.pusher.got(); len(got) != 0 {
		t.Fatalf("Alice got %d pushes for a message her own console acknowledged, want 0", len(got))
	}
}
