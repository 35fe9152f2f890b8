package postgres_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
)

// TestIDsStayDense: a write that is refused or found to be a duplicate
// draws no message ID, so the IDs of stored messages have no holes. Every
// node's sequencer (channels/web) takes a hole for an update still in
// flight and holds every conversation's updates behind it for its full
// wait: in a cluster, agents racing for capacity made such holes on every
// assignment refused.
func TestIDsStayDense(t *testing.T) {
	dsn := freshSchema(t)
	ctx := context.Background()
	s := open(t, dsn, postgres.Options{})
	agent, err := s.CreateAgent(ctx, core.Agent{Email: "a@example.com", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	ingest := func(ext, dedup string) core.Ingested {
		t.Helper()
		in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: ext,
			Message: core.Message{Kind: core.KindText, Text: "hi", DedupKey: dedup}})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	first, second := ingest("v1", "p:web:1"), ingest("v2", "p:web:2")

	if _, err := s.Assign(ctx, core.Assignment{ConversationID: first.Conversation.ID, AgentID: agent.ID, MaxOpen: 1}); err != nil {
		t.Fatal(err)
	}
	// Refused for capacity: the agent has one open conversation of one.
	if _, err := s.Assign(ctx, core.Assignment{ConversationID: second.Conversation.ID, AgentID: agent.ID, MaxOpen: 1}); !errors.Is(err, core.ErrCapacity) {
		t.Fatalf("assign beyond capacity: %v, want ErrCapacity", err)
	}
	// Duplicates: a provider's retry into a live conversation, and an
	// agent's resend.
	if in := ingest("v1", "p:web:1"); !in.Duplicate || in.Message.ID != first.Message.ID {
		t.Fatalf("retried ingest: %+v", in)
	}
	reply := core.Append{ConversationID: first.Conversation.ID, Message: core.Message{SenderKind: core.SenderAgent,
		SenderID: agent.ID, Kind: core.KindText, Text: "hello", Status: core.MsgPending, DedupKey: "c:a:1"}}
	a1, err := s.Append(ctx, reply)
	if err != nil || a1.Duplicate {
		t.Fatalf("reply: %+v, %v", a1, err)
	}
	if a2, err := s.Append(ctx, reply); err != nil || !a2.Duplicate || a2.Message.ID != a1.Message.ID {
		t.Fatalf("resent reply: %+v, %v", a2, err)
	}
	// A refused write between two stored ones.
	if _, err := s.Assign(ctx, core.Assignment{ConversationID: second.Conversation.ID, AgentID: agent.ID, MaxOpen: 1}); !errors.Is(err, core.ErrCapacity) {
		t.Fatalf("assign beyond capacity: %v, want ErrCapacity", err)
	}
	last := ingest("v2", "p:web:3")

	ms, err := s.Feed(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	// v1, v2, the assigned event, the reply, v2's second message.
	if len(ms) != 5 || ms[len(ms)-1].ID != last.Message.ID {
		t.Fatalf("feed has %d messages, want 5 ending with %d: %+v", len(ms), last.Message.ID, ms)
	}
	checkDense(t, ms)
}

// checkDense fails t when the messages' IDs (in feed order) have a hole.
func checkDense(t *testing.T, ms []core.Message) {
	t.Helper()
	for i := 1; i < len(ms); i++ {
		if ms[i].ID != ms[i-1].ID+1 {
			t.Errorf("message IDs jump from %d to %d: %d drawn and never stored", ms[i-1].ID, ms[i].ID, ms[i].ID-ms[i-1].ID-1)
		}
	}
}
