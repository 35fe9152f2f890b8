package sqlite

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/kefuhq/kefu/core"
)

// failingAssignment opens a store with an agent and n waiting
// conversations, where assigning ids[failing] fails after its event is
// written: a trigger refuses its conversation's update. DROP TRIGGER boom
// ends that.
func failingAssignment(t *testing.T, n, failing int) (*Store, core.Agent, []int64) {
	t.Helper()
	ctx := context.Background()
	s := openStore(t, Options{})
	a, err := s.CreateAgent(ctx, core.Agent{Email: "a@x", Name: "a", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range n {
		r, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: fmt.Sprint("v", i), Message: core.Message{Kind: core.KindText, Text: "hi"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Conversation.ID)
	}
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf(`CREATE TRIGGER boom BEFORE UPDATE OF status ON conversations WHEN NEW.id = %d BEGIN SELECT RAISE(ABORT, 'boom'); END`, ids[failing])); err != nil {
		t.Fatal(err)
	}
	return s, a, ids
}

// A failure after the middle assignment has written (a trigger refuses its
// conversation update, after its event was inserted): its event is rolled
// back to its savepoint, the one before it commits, the writer's
// conversation cache is not stale, and sequence numbers stay gapless.
func TestAssignAllFailureAfterAWrite(t *testing.T) {
	ctx := context.Background()
	s, a, ids := failingAssignment(t, 3, 1)
	var as []core.Assignment
	for _, id := range ids {
		as = append(as, core.Assignment{ConversationID: id, AgentID: a.ID})
	}
	done, err := s.AssignAll(ctx, as)
	if err == nil || len(done) != 1 || done[0].Conversation.ID != ids[0] {
		t.Fatalf("AssignAll = %d changes, %v", len(done), err)
	}
	if _, err := s.w.ExecContext(ctx, `DROP TRIGGER boom`); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Messages(ctx, core.MessageQuery{ConversationID: ids[1]})
	if err != nil || len(ms) != 1 {
		t.Fatalf("conversation %d has %d messages (%v), want 1: the event must be rolled back", ids[1], len(ms), err)
	}
	ap, err := s.Append(ctx, core.Append{ConversationID: ids[1], Message: core.Message{SenderKind: core.SenderContact, Kind: core.KindText, Text: "again"}})
	if err != nil || ap.Message.Seq != 2 {
		t.Fatalf("next message seq %d (%v), want 2", ap.Message.Seq, err)
	}
	if ap.Message.ID <= done[0].Event.ID {
		t.Errorf("message IDs out of commit order")
	}
}

// The same with AssignAll inside a batch of several ops, so that its
// savepoints nest inside the op's own, and appends to the same
// conversations around it.
func TestAssignAllFailureAfterAWriteInABatch(t *testing.T) {
	ctx := context.Background()
	s, a, ids := failingAssignment(t, 4, 2)
	running, release := make(chan struct{}), make(chan struct{})
	go s.do(ctx, func(*wtx) error { close(running); <-release; return nil })
	<-running
	type res struct {
		done []core.Changed
		err  error
	}
	aa := make(chan res, 1)
	apps := make(chan error, 3)
	app := func(id int64) {
		_, err := s.Append(ctx, core.Append{ConversationID: id, Message: core.Message{SenderKind: core.SenderContact, Kind: core.KindText, Text: "x"}})
		apps <- err
	}
	go app(ids[0])
	go func() {
		d, err := s.AssignAll(ctx, []core.Assignment{{ConversationID: ids[1], AgentID: a.ID}, {ConversationID: ids[2], AgentID: a.ID}, {ConversationID: ids[3], AgentID: a.ID}})
		aa <- res{d, err}
	}()
	go app(ids[2])
	go app(ids[3])
	for len(s.ops) < 4 {
		runtime.Gosched()
	}
	commits := s.commits.Load()
	close(release)
	r := <-aa
	for range 3 {
		if err := <-apps; err != nil {
			t.Fatal(err)
		}
	}
	if n := s.commits.Load() - commits; n != 2 {
		t.Fatalf("%d batches, want 2: the blocking op's, and one for the four queued behind it", n)
	}
	if len(r.done) != 1 || r.done[0].Conversation.ID != ids[1] {
		t.Fatalf("AssignAll = %+v, %v", r.done, r.err)
	}
	if _, err := s.w.ExecContext(ctx, `DROP TRIGGER boom`); err != nil {
		t.Fatal(err)
	}
	var lastID int64
	for _, id := range ids {
		ms, err := s.Messages(ctx, core.MessageQuery{ConversationID: id})
		if err != nil {
			t.Fatal(err)
		}
		ap, err := s.Append(ctx, core.Append{ConversationID: id, Message: core.Message{SenderKind: core.SenderContact, Kind: core.KindText, Text: "y"}})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := s.Conversation(ctx, id)
		if ap.Message.Seq != int64(len(ms))+1 || c.LastSeq != ap.Message.Seq || ap.Message.ID <= lastID {
			t.Errorf("conversation %d: %d messages, next seq %d, stored last seq %d", id, len(ms), ap.Message.Seq, c.LastSeq)
		}
		for i, m := range ms {
			if m.Seq != int64(i)+1 {
				t.Errorf("conversation %d: message %d has seq %d", id, i, m.Seq)
			}
			if id == ids[2] && m.Event != nil {
				t.Errorf("rolled back event stored: %+v", m)
			}
		}
		lastID = ap.Message.ID
	}
}
