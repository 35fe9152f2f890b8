// Package storetest is the contract suite for core.Store: every backend runs
// Run against fresh stores of its own and must pass all of it.
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) core.Store {
//			s, err := mystore.Open(…)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite uses explicit times (no sleeping) at whole seconds, so a backend
// that keeps microseconds returns them unchanged; it compares times with
// time.Time.Equal.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/kefuhq/kefu/core"
)

// Run runs the contract suite. open returns a fresh, empty store for one
// subtest and arranges for it to be closed when the subtest ends (Close is
// idempotent, and one subtest closes its store itself).
func Run(t *testing.T, open func(t *testing.T) core.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s core.Store)
	}{
		{"IngestCreatesContactAndConversation", testIngestCreates},
		{"IngestSameIdentitySameConversation", testIngestSameConversation},
		{"IngestReopensWithinWindow", testIngestReopens},
		{"IngestNewConversationAfterWindow", testIngestAfterWindow},
		{"IngestDedup", testIngestDedup},
		{"IngestInvalid", testIngestInvalid},
		{"AppendDedup", testAppendDedup},
		{"AppendInvalid", testAppendInvalid},
		{"AppendContactMovesLastInbound", testAppendContact},
		{"SeqGaplessUnderConcurrency", testSeqConcurrent},
		{"IDsIncreaseInCommitOrder", testCommitOrder},
		{"StatusMovesForward", testStatusForward},
		{"MessageByExternalID", testMessageByExternalID},
		{"TemplateMessage", testTemplateMessage},
		{"AtomicTake", testAtomicTake},
		{"AssignCapacity", testCapacity},
		{"AssignRefusesInactiveAgent", testAssignInactive},
		{"AssignAllInOrder", testAssignAll},
		{"AssignAllStopsAtTheFirstFailure", testAssignAllStops},
		{"AssignTransferAndFrom", testTransfer},
		{"Unassign", testUnassign},
		{"QueueOrder", testQueueOrder},
		{"OpenCounts", testOpenCounts},
		{"SetStatus", testSetStatus},
		{"ReopenConflictsWithLiveConversation", testReopenConflict},
		{"MarkUpTo", testMarkUpTo},
		{"KeepsWindow", testKeepsWindow},
		{"Agents", testAgents},
		{"LastAdminConcurrently", testLastAdminConcurrently},
		{"UpdateAgentRefusesAStaleRead", testUpdateAgentStale},
		{"OutboxAppendDeliver", testOutboxDeliver},
		{"OutboxEnqueueAndDue", testOutboxDue},
		{"OutboxFinishIsAtomic", testOutboxFinish},
		{"ConversationsFilter", testConversationsFilter},
		{"MessagesPaging", testMessagesPaging},
		{"Feed", testFeed},
		{"ContactsBatch", testContactsBatch},
		{"LastMessages", testLastMessages},
		{"MoveIdentity", testMoveIdentity},
		{"EnsureSetting", testEnsureSetting},
		{"PutSetting", testPutSetting},
		{"SettingsList", testSettingsList},
		{"MediaUsed", testMediaUsed},
		{"SwapSetting", testSwapSetting},
		{"Sessions", testSessions},
		{"Devices", testDevices},
		{"NotFound", testNotFound},
		{"FailingWriteDoesNotFailOthers", testBatchIsolation},
		{"CanceledContext", testCanceled},
		{"Closed", testClosed},
	}
	tests = append(tests, leaseTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// t0 is the suite's base time; every time is t0 plus whole seconds.
var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

var ctx = context.Background()

// Helpers. Each fails the test on an unexpected error.

func ingest(t *testing.T, s core.Store, channel, ext, text string, when time.Time) core.Ingested {
	t.Helper()
	r, err := s.Ingest(ctx, core.Inbound{Channel: channel, ExternalID: ext, Name: "Customer " + ext,
		Message: core.Message{Kind: core.KindText, Text: text, CreatedAt: when}, ReopenWithin: time.Hour})
	if err != nil {
		t.Fatalf("Ingest(%s/%s): %v", channel, ext, err)
	}
	return r
}

func agentText(agent int64, text string, when time.Time) core.Message {
	return core.Message{SenderKind: core.SenderAgent, SenderID: agent, Visibility: core.Public,
		Kind: core.KindText, Text: text, CreatedAt: when}
}

func appendMsg(t *testing.T, s core.Store, conv int64, m core.Message) core.Appended {
	t.Helper()
	r, err := s.Append(ctx, core.Append{ConversationID: conv, Message: m})
	if err != nil {
		t.Fatalf("Append(%d): %v", conv, err)
	}
	return r
}

func newAgent(t *testing.T, s core.Store, email string) core.Agent {
	t.Helper()
	a, err := s.CreateAgent(ctx, core.Agent{Email: email, Name: email, Role: core.RoleAgent, Active: true,
		CreatedAt: t0})
	if err != nil {
		t.Fatalf("CreateAgent(%s): %v", email, err)
	}
	return a
}

// asg is an assignment with its event.
func asg(conv, agent, from int64, maxOpen int, when time.Time) core.Assignment {
	typ := core.EventAssigned
	switch {
	case agent == 0:
		typ = core.EventUnassigned
	case from != 0:
		typ = core.EventTransferred
	}
	return core.Assignment{ConversationID: conv, AgentID: agent, From: from, MaxOpen: maxOpen, At: when,
		Event: core.Message{SenderKind: core.SenderSystem, Kind: core.KindEvent, Visibility: core.Internal,
			Event: &core.Event{Type: typ, AgentID: agent, FromID: from}}}
}

func assign(t *testing.T, s core.Store, conv, agent, from int64, when time.Time) core.Changed {
	t.Helper()
	c, err := s.Assign(ctx, asg(conv, agent, from, 0, when))
	if err != nil {
		t.Fatalf("Assign(%d → %d from %d): %v", conv, agent, from, err)
	}
	return c
}

func setStatus(s core.Store, conv int64, to, from core.ConversationStatus, when time.Time) (core.Changed, error) {
	ev := core.EventResolved
	if to == core.StatusOpen {
		ev = core.EventReopened
	}
	return s.SetStatus(ctx, core.StatusChange{ConversationID: conv, Status: to, From: from, At: when,
		Event: core.Message{SenderKind: core.SenderSystem, Kind: core.KindEvent, Visibility: core.Public,
			Event: &core.Event{Type: ev}}})
}

func conversation(t *testing.T, s core.Store, id int64) core.Conversation {
	t.Helper()
	c, err := s.Conversation(ctx, id)
	if err != nil {
		t.Fatalf("Conversation(%d): %v", id, err)
	}
	return c
}

func messages(t *testing.T, s core.Store, q core.MessageQuery) []core.Message {
	t.Helper()
	ms, err := s.Messages(ctx, q)
	if err != nil {
		t.Fatalf("Messages(%+v): %v", q, err)
	}
	return ms
}

func seqs(ms []core.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func ids[T any](vs []T, id func(T) int64) []int64 {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = id(v)
	}
	return out
}

func convID(c core.Conversation) int64 { return c.ID }

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func equalTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// sameMessage compares the stored fields of two messages.
func sameMessage(t *testing.T, what string, got, want core.Message) {
	t.Helper()
	if !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("%s: CreatedAt = %v, want %v", what, got.CreatedAt, want.CreatedAt)
	}
	if (got.Media == nil) != (want.Media == nil) || got.Media != nil && *got.Media != *want.Media {
		t.Errorf("%s: Media = %+v, want %+v", what, got.Media, want.Media)
	}
	if (got.Event == nil) != (want.Event == nil) || got.Event != nil && *got.Event != *want.Event {
		t.Errorf("%s: Event = %+v, want %+v", what, got.Event, want.Event)
	}
	got.CreatedAt, want.CreatedAt = time.Time{}, time.Time{}
	got.Media, want.Media, got.Event, want.Event = nil, nil, nil, nil
	if got != want {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func sameConversation(t *testing.T, what string, got, want core.Conversation) {
	t.Helper()
	for _, p := range []struct {
		name string
		g, w time.Time
	}{
		{"LastInboundAt", got.LastInboundAt, want.LastInboundAt},
		{"QueuedAt", got.QueuedAt, want.QueuedAt},
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"UpdatedAt", got.UpdatedAt, want.UpdatedAt},
		{"ResolvedAt", got.ResolvedAt, want.ResolvedAt},
	} {
		if !p.g.Equal(p.w) {
			t.Errorf("%s: %s = %v, want %v", what, p.name, p.g, p.w)
		}
	}
	got.LastInboundAt, got.QueuedAt, got.CreatedAt, got.UpdatedAt, got.ResolvedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	want.LastInboundAt, want.QueuedAt, want.CreatedAt, want.UpdatedAt, want.ResolvedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if got != want {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func testIngestCreates(t *testing.T, s core.Store) {
	r, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "8613800000000", Name: "Zhang San",
		Message:      core.Message{Kind: core.KindText, Text: "hello", DedupKey: core.ProviderKey("wa", "m1"), CreatedAt: t0},
		ReopenWithin: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !r.NewContact || !r.NewConversation || r.Reopened || r.Duplicate || len(r.Events) != 0 {
		t.Fatalf("flags: %+v", r)
	}
	if r.Contact.ID == 0 || r.Contact.Name != "Zhang San" {
		t.Errorf("contact = %+v", r.Contact)
	}
	c := r.Conversation
	if c.ID == 0 || c.ContactID != r.Contact.ID || c.Channel != "wa" || c.ExternalID != "8613800000000" ||
		c.Status != core.StatusPending || c.AssigneeID != 0 || c.LastSeq != 1 {
		t.Errorf("conversation = %+v", c)
	}
	equalTime(t, "QueuedAt", c.QueuedAt, t0)
	equalTime(t, "LastInboundAt", c.LastInboundAt, t0)
	equalTime(t, "CreatedAt", c.CreatedAt, t0)
	equalTime(t, "UpdatedAt", c.UpdatedAt, t0)
	if !c.ResolvedAt.IsZero() {
		t.Errorf("ResolvedAt = %v, want zero", c.ResolvedAt)
	}
	m := r.Message
	if m.ID == 0 || m.ConversationID != c.ID || m.Seq != 1 || m.SenderKind != core.SenderContact ||
		m.SenderID != r.Contact.ID || m.Visibility != core.Public || m.Kind != core.KindText ||
		m.Text != "hello" || m.Status != core.MsgSent || m.DedupKey != core.ProviderKey("wa", "m1") {
		t.Errorf("message = %+v", m)
	}
	equalTime(t, "message CreatedAt", m.CreatedAt, t0)

	// What was returned is what is stored.
	sameConversation(t, "stored conversation", conversation(t, s, c.ID), c)
	got, err := s.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, "stored message", got, m)
	contact, err := s.Contact(ctx, r.Contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	if contact.ID != r.Contact.ID || contact.Name != "Zhang San" {
		t.Errorf("stored contact = %+v", contact)
	}

	// Media and a zero CreatedAt (the store's clock).
	r2, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1", Message: core.Message{
		Kind: core.KindImage, Media: &core.Media{Key: "k/1", Name: "a.png", Type: "image/png", Size: 42,
			Preview: "k/1.preview"}}})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Message.CreatedAt.IsZero() || r2.Contact.ID == r.Contact.ID {
		t.Errorf("second ingest = %+v", r2)
	}
	got, err = s.Message(ctx, r2.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Media == nil || *got.Media != (core.Media{Key: "k/1", Name: "a.png", Type: "image/png", Size: 42,
		Preview: "k/1.preview"}) ||
		got.Event != nil {
		t.Errorf("media message = %+v (media %+v)", got, got.Media)
	}
}

func testIngestSameConversation(t *testing.T, s core.Store) {
	a := ingest(t, s, "tg", "42", "one", t0)
	b := ingest(t, s, "tg", "42", "two", at(time.Second))
	if b.NewContact || b.NewConversation || b.Reopened {
		t.Errorf("flags: %+v", b)
	}
	if b.Contact.ID != a.Contact.ID || b.Conversation.ID != a.Conversation.ID {
		t.Fatalf("second message in contact %d conversation %d, want %d %d",
			b.Contact.ID, b.Conversation.ID, a.Contact.ID, a.Conversation.ID)
	}
	if b.Message.Seq != 2 || b.Conversation.LastSeq != 2 {
		t.Errorf("seq %d, last seq %d; want 2", b.Message.Seq, b.Conversation.LastSeq)
	}
	equalTime(t, "LastInboundAt", b.Conversation.LastInboundAt, at(time.Second))
	equalTime(t, "QueuedAt", b.Conversation.QueuedAt, t0)

	// Another identity of the same channel is another contact.
	c := ingest(t, s, "tg", "43", "hi", t0)
	if c.Contact.ID == a.Contact.ID || c.Conversation.ID == a.Conversation.ID {
		t.Errorf("another identity shares contact or conversation: %+v", c)
	}

	// A new name from the provider updates the contact; an empty one does not.
	r, err := s.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42", Name: "Renamed",
		Message: core.Message{Kind: core.KindText, Text: "three", CreatedAt: at(2 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Contact.Name != "Renamed" {
		t.Errorf("contact name = %q", r.Contact.Name)
	}
	if _, err := s.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42",
		Message: core.Message{Kind: core.KindText, Text: "four", CreatedAt: at(3 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	contact, err := s.Contact(ctx, a.Contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	if contact.Name != "Renamed" {
		t.Errorf("stored name = %q, want Renamed", contact.Name)
	}
}

func testIngestReopens(t *testing.T, s core.Store) {
	// Unassigned: reopening puts it back in the queue.
	a := ingest(t, s, "wechat", "o1", "hi", t0)
	if _, err := setStatus(s, a.Conversation.ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	later := at(time.Minute + time.Hour) // exactly ReopenWithin after resolving
	r := ingest(t, s, "wechat", "o1", "again", later)
	if !r.Reopened || r.NewConversation || r.Conversation.ID != a.Conversation.ID {
		t.Fatalf("got %+v, want conversation %d reopened", r, a.Conversation.ID)
	}
	c := r.Conversation
	if c.Status != core.StatusPending || c.LastSeq != 4 || !c.ResolvedAt.IsZero() {
		t.Errorf("reopened conversation = %+v", c)
	}
	equalTime(t, "QueuedAt", c.QueuedAt, later)
	if len(r.Events) != 1 {
		t.Fatalf("events = %+v", r.Events)
	}
	ev := r.Events[0]
	if ev.Seq != 3 || r.Message.Seq != 4 || ev.Kind != core.KindEvent || ev.Event == nil ||
		ev.Event.Type != core.EventReopened || ev.SenderKind != core.SenderSystem ||
		ev.Visibility != core.Public || ev.Status != core.MsgSent || ev.ConversationID != c.ID || ev.ID == 0 ||
		ev.ID >= r.Message.ID {
		t.Errorf("reopen event = %+v (event %+v), message %+v", ev, ev.Event, r.Message)
	}
	stored := messages(t, s, core.MessageQuery{ConversationID: c.ID})
	if !slices.Equal(seqs(stored), []int64{1, 2, 3, 4}) {
		t.Errorf("seqs = %v", seqs(stored))
	}
	sameMessage(t, "stored event", stored[2], ev)

	// Assigned: reopening goes back to the same agent, open.
	agent := newAgent(t, s, "alice@example.com")
	b := ingest(t, s, "wechat", "o2", "hi", t0)
	assign(t, s, b.Conversation.ID, agent.ID, 0, at(time.Second))
	if _, err := setStatus(s, b.Conversation.ID, core.StatusResolved, core.StatusOpen, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	r = ingest(t, s, "wechat", "o2", "again", at(2*time.Minute))
	if !r.Reopened || r.Conversation.Status != core.StatusOpen || r.Conversation.AssigneeID != agent.ID {
		t.Errorf("reopened assigned conversation = %+v", r.Conversation)
	}
	equalTime(t, "QueuedAt unchanged", r.Conversation.QueuedAt, t0)
}

func testIngestAfterWindow(t *testing.T, s core.Store) {
	a := ingest(t, s, "wechat", "o1", "hi", t0)
	if _, err := setStatus(s, a.Conversation.ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	later := at(time.Minute + time.Hour + time.Second)
	r := ingest(t, s, "wechat", "o1", "much later", later)
	if r.Reopened || !r.NewConversation || r.NewContact || r.Conversation.ID == a.Conversation.ID ||
		r.Contact.ID != a.Contact.ID || len(r.Events) != 0 {
		t.Fatalf("got %+v, want a new conversation for the same contact", r)
	}
	if r.Message.Seq != 1 || r.Conversation.Status != core.StatusPending {
		t.Errorf("new conversation %+v, message seq %d", r.Conversation, r.Message.Seq)
	}
	equalTime(t, "QueuedAt", r.Conversation.QueuedAt, later)
	old := conversation(t, s, a.Conversation.ID)
	if old.Status != core.StatusResolved || old.LastSeq != 2 {
		t.Errorf("old conversation changed: %+v", old)
	}
	equalTime(t, "old ResolvedAt", old.ResolvedAt, at(time.Minute))
	// The next message goes to the new conversation.
	if n := ingest(t, s, "wechat", "o1", "more", later.Add(time.Second)); n.Conversation.ID != r.Conversation.ID ||
		n.Message.Seq != 2 {
		t.Errorf("next message in %d seq %d", n.Conversation.ID, n.Message.Seq)
	}
}

func testIngestDedup(t *testing.T, s core.Store) {
	in := core.Inbound{Channel: "wechat", ExternalID: "o1", Name: "A",
		Message: core.Message{Kind: core.KindText, Text: "hi", DedupKey: core.ProviderKey("wechat", "123"), CreatedAt: t0}}
	first, err := s.Ingest(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	in.Message.CreatedAt = at(time.Second) // the provider's retry
	in.Message.Text = "hi (retry)"
	again, err := s.Ingest(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.NewContact || again.NewConversation {
		t.Errorf("flags: %+v", again)
	}
	sameMessage(t, "duplicate", again.Message, first.Message)
	byKey, err := s.MessageByDedup(ctx, in.Message.DedupKey)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, "by dedup key", byKey, first.Message)
	_, err = s.MessageByDedup(ctx, core.ProviderKey("wechat", "124"))
	wantErr(t, "unknown dedup key", err, core.ErrNotFound)
	if again.Conversation.ID != first.Conversation.ID || again.Conversation.LastSeq != 1 {
		t.Errorf("duplicate's conversation = %+v", again.Conversation)
	}
	if c := conversation(t, s, first.Conversation.ID); c.LastSeq != 1 {
		t.Errorf("last seq after duplicate = %d, want 1", c.LastSeq)
	}
	// The sequence number was not consumed.
	next := ingest(t, s, "wechat", "o1", "next", at(2*time.Second))
	if next.Message.Seq != 2 {
		t.Errorf("next seq = %d, want 2", next.Message.Seq)
	}
	if ms := messages(t, s, core.MessageQuery{ConversationID: first.Conversation.ID}); len(ms) != 2 {
		t.Errorf("%d messages stored, want 2", len(ms))
	}

	// Concurrent retries of one message store it once.
	var wg sync.WaitGroup
	results := make([]core.Ingested, 10)
	errs := make([]error, 10)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = s.Ingest(ctx, core.Inbound{Channel: "wechat", ExternalID: "o1",
				Message: core.Message{Kind: core.KindText, Text: "burst", DedupKey: core.ProviderKey("wechat", "456"), CreatedAt: at(3 * time.Second)}})
		})
	}
	wg.Wait()
	dups := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.Message.ID != results[0].Message.ID {
			t.Errorf("result %d has message %d, want %d", i, r.Message.ID, results[0].Message.ID)
		}
		if r.Duplicate {
			dups++
		}
	}
	if dups != 9 {
		t.Errorf("%d duplicates, want 9", dups)
	}
}

func testIngestInvalid(t *testing.T, s core.Store) {
	for _, tc := range []struct {
		name string
		in   core.Inbound
	}{
		{"empty message", core.Inbound{Channel: "web", ExternalID: "v", Message: core.Message{CreatedAt: t0}}},
		{"no channel", core.Inbound{ExternalID: "v", Message: core.Message{Text: "x"}}},
		{"no external id", core.Inbound{Channel: "web", Message: core.Message{Text: "x"}}},
	} {
		_, err := s.Ingest(ctx, tc.in)
		wantErr(t, tc.name, err, core.ErrInvalid)
	}
	if cs, err := s.Conversations(ctx, core.ConversationFilter{}); err != nil || len(cs) != 0 {
		t.Errorf("invalid ingests stored %d conversations (err %v)", len(cs), err)
	}
}

func testAppendDedup(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	agent := newAgent(t, s, "a@example.com")
	m := agentText(agent.ID, "hello", at(time.Second))
	m.DedupKey = core.ClientKey("agent1", "abc")
	m.Status = core.MsgPending
	first, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: m, Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || first.Outbox == nil || first.Message.Seq != 2 {
		t.Fatalf("first append = %+v", first)
	}
	again, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: m, Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Outbox != nil || again.Conversation.ID != conv.ID {
		t.Errorf("resend = %+v", again)
	}
	sameMessage(t, "duplicate", again.Message, first.Message)
	if n, _, err := s.OutboxStats(ctx); err != nil || n != 1 {
		t.Errorf("outbox depth %d (err %v), want 1", n, err)
	}
	next := appendMsg(t, s, conv.ID, agentText(agent.ID, "next", at(2*time.Second)))
	if next.Message.Seq != 3 {
		t.Errorf("next seq = %d, want 3", next.Message.Seq)
	}
	// The key is store-wide: the same key on another conversation is the
	// stored message too.
	other := ingest(t, s, "web", "v2", "hi", t0).Conversation
	r, err := s.Append(ctx, core.Append{ConversationID: other.ID, Message: m})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Duplicate || r.Message.ID != first.Message.ID {
		t.Errorf("same key elsewhere = %+v", r)
	}
	if c := conversation(t, s, other.ID); c.LastSeq != 1 {
		t.Errorf("other conversation's last seq = %d, want 1", c.LastSeq)
	}
}

func testAppendInvalid(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	_, err := s.Append(ctx, core.Append{ConversationID: conv.ID,
		Message: core.Message{SenderKind: core.SenderAgent, SenderID: 1, Visibility: core.Public}})
	wantErr(t, "empty message", err, core.ErrInvalid)
	if c := conversation(t, s, conv.ID); c.LastSeq != 1 {
		t.Errorf("last seq = %d after invalid append", c.LastSeq)
	}
}

func testAppendContact(t *testing.T, s core.Store) {
	r := ingest(t, s, "web", "v1", "hi", t0)
	agent := newAgent(t, s, "a@example.com")
	a := appendMsg(t, s, r.Conversation.ID, agentText(agent.ID, "hello", at(time.Minute)))
	if a.Message.Status != core.MsgSent || a.Message.SenderKind != core.SenderAgent || a.Message.SenderID != agent.ID {
		t.Errorf("agent message = %+v", a.Message)
	}
	equalTime(t, "LastInboundAt after agent message", a.Conversation.LastInboundAt, t0)
	equalTime(t, "UpdatedAt", a.Conversation.UpdatedAt, at(time.Minute))
	c := appendMsg(t, s, r.Conversation.ID, core.Message{SenderKind: core.SenderContact, SenderID: r.Contact.ID,
		Visibility: core.Public, Kind: core.KindText, Text: "via the socket", CreatedAt: at(2 * time.Minute)})
	equalTime(t, "LastInboundAt after contact message", c.Conversation.LastInboundAt, at(2*time.Minute))
	sameConversation(t, "stored", conversation(t, s, r.Conversation.ID), c.Conversation)

	// A message stored late (media fetched after its callback) keeps its
	// time but takes neither time back, by Append or by Ingest.
	late := appendMsg(t, s, r.Conversation.ID, core.Message{SenderKind: core.SenderContact, SenderID: r.Contact.ID,
		Visibility: core.Public, Kind: core.KindText, Text: "an image, fetched late", CreatedAt: at(30 * time.Second)})
	equalTime(t, "message time", late.Message.CreatedAt, at(30*time.Second))
	equalTime(t, "LastInboundAt after a late message", late.Conversation.LastInboundAt, at(2*time.Minute))
	equalTime(t, "UpdatedAt after a late message", late.Conversation.UpdatedAt, at(2*time.Minute))
	in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1", ReopenWithin: time.Hour,
		Message: core.Message{Kind: core.KindText, Text: "late again", CreatedAt: at(40 * time.Second)}})
	if err != nil || in.Conversation.ID != r.Conversation.ID {
		t.Fatalf("late ingest: %+v, %v", in, err)
	}
	equalTime(t, "LastInboundAt after a late ingest", in.Conversation.LastInboundAt, at(2*time.Minute))
	sameConversation(t, "stored after late messages", conversation(t, s, r.Conversation.ID), in.Conversation)
	// And one that reopens the conversation, resolved since.
	if _, err := setStatus(s, r.Conversation.ID, core.StatusResolved, "", at(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	re, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1", ReopenWithin: time.Hour,
		Message: core.Message{Kind: core.KindText, Text: "late, reopening", CreatedAt: at(150 * time.Second)}})
	if err != nil || !re.Reopened {
		t.Fatalf("late reopening ingest: %+v, %v", re, err)
	}
	equalTime(t, "UpdatedAt after a late reopening message", re.Conversation.UpdatedAt, at(3*time.Minute))
	equalTime(t, "LastInboundAt after a late reopening message", re.Conversation.LastInboundAt, at(150*time.Second))
	sameConversation(t, "stored after the reopening", conversation(t, s, r.Conversation.ID), re.Conversation)
}

// testSeqConcurrent: 16 goroutines × 50 appends over 4 conversations; each
// conversation ends with exactly 1..N.
func testSeqConcurrent(t *testing.T, s core.Store) {
	const convs, workers, each = 4, 16, 50
	var cs []core.Conversation
	for i := range convs {
		cs = append(cs, ingest(t, s, "web", "v"+strconv.Itoa(i), "hi", t0).Conversation)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				c := cs[(w+i)%convs]
				_, err := s.Append(ctx, core.Append{ConversationID: c.ID,
					Message: agentText(1, fmt.Sprintf("w%d-%d", w, i), at(time.Second))})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, c := range cs {
		ms := messages(t, s, core.MessageQuery{ConversationID: c.ID, Limit: 1000})
		n := len(ms)
		total += n - 1
		for i, m := range ms {
			if m.Seq != int64(i+1) {
				t.Fatalf("conversation %d: message %d has seq %d (seqs %v)", c.ID, i, m.Seq, seqs(ms))
			}
			if i > 0 && m.ID <= ms[i-1].ID {
				t.Fatalf("conversation %d: seq %d has id %d ≤ previous %d", c.ID, m.Seq, m.ID, ms[i-1].ID)
			}
		}
		if got := conversation(t, s, c.ID).LastSeq; got != int64(n) {
			t.Errorf("conversation %d: last seq %d, %d messages", c.ID, got, n)
		}
	}
	if total != workers*each {
		t.Errorf("%d messages appended, want %d", total, workers*each)
	}
}

// testCommitOrder: concurrent writers; the feed is in ascending ID order,
// and within each conversation seq order agrees with ID order. A reader
// following the feed never sees an ID below one it has seen.
func testCommitOrder(t *testing.T, s core.Store) {
	var cs []core.Conversation
	for i := range 3 {
		cs = append(cs, ingest(t, s, "web", "v"+strconv.Itoa(i), "hi", t0).Conversation)
	}
	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() { // follows the feed while writers write
		var cursor int64
		var err error
		defer func() { readerErr <- err }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var ms []core.Message
			ms, err = s.Feed(ctx, cursor, 100)
			if err != nil {
				return
			}
			for _, m := range ms {
				if m.ID <= cursor {
					err = fmt.Errorf("feed returned id %d after cursor %d", m.ID, cursor)
					return
				}
				cursor = m.ID
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				if _, err := s.Append(ctx, core.Append{ConversationID: cs[(w+i)%3].ID,
					Message: agentText(1, "x", at(time.Second))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}

	var all []core.Message
	var cursor int64
	for {
		ms, err := s.Feed(ctx, cursor, 37)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		if len(ms) > 37 {
			t.Fatalf("feed returned %d, limit 37", len(ms))
		}
		all = append(all, ms...)
		cursor = ms[len(ms)-1].ID
	}
	if len(all) != 3+8*25 {
		t.Fatalf("feed has %d messages, want %d", len(all), 3+8*25)
	}
	lastSeq := map[int64]int64{}
	for i, m := range all {
		if i > 0 && m.ID <= all[i-1].ID {
			t.Fatalf("feed not in ascending id order at %d: %d after %d", i, m.ID, all[i-1].ID)
		}
		if m.Seq != lastSeq[m.ConversationID]+1 {
			t.Fatalf("conversation %d: id %d has seq %d after seq %d", m.ConversationID, m.ID, m.Seq,
				lastSeq[m.ConversationID])
		}
		lastSeq[m.ConversationID] = m.Seq
	}
}

func testStatusForward(t *testing.T, s core.Store) {
	conv := ingest(t, s, "wa", "1", "hi", t0).Conversation
	m := agentText(1, "reply", at(time.Second))
	m.Status = core.MsgPending
	msg := appendMsg(t, s, conv.ID, m).Message
	if msg.Status != core.MsgPending {
		t.Fatalf("status = %s, want pending", msg.Status)
	}
	steps := []struct {
		to      core.MessageStatus
		changed bool
		want    core.MessageStatus
	}{
		{core.MsgSent, true, core.MsgSent},
		{core.MsgSent, false, core.MsgSent},
		{core.MsgRead, true, core.MsgRead},
		{core.MsgDelivered, false, core.MsgRead}, // a late delivery receipt
		{core.MsgFailed, false, core.MsgRead},    // a read message cannot fail
		{core.MsgPending, false, core.MsgRead},
	}
	for _, st := range steps {
		got, changed, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: msg.ID, Status: st.to})
		if err != nil {
			t.Fatal(err)
		}
		if changed != st.changed || got.Status != st.want || got.ID != msg.ID {
			t.Errorf("→ %s: changed %v status %s, want %v %s", st.to, changed, got.Status, st.changed, st.want)
		}
	}
	if got, _ := s.Message(ctx, msg.ID); got.Status != core.MsgRead {
		t.Errorf("stored status %s, want read", got.Status)
	}

	// Failed is final and keeps its reason.
	m2 := appendMsg(t, s, conv.ID, agentText(1, "outside the window", at(2*time.Second))).Message
	got, changed, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: m2.ID, Status: core.MsgFailed,
		Reason: "re-engagement window closed"})
	if err != nil || !changed || got.Status != core.MsgFailed || got.FailReason != "re-engagement window closed" {
		t.Fatalf("fail: %+v %v %v", got, changed, err)
	}
	for _, to := range []core.MessageStatus{core.MsgDelivered, core.MsgRead, core.MsgFailed} {
		got, changed, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: m2.ID, Status: to, Reason: "other"})
		if err != nil || changed || got.Status != core.MsgFailed || got.FailReason != "re-engagement window closed" {
			t.Errorf("failed → %s: %+v changed %v err %v", to, got, changed, err)
		}
	}
	stored, err := s.Message(ctx, m2.ID)
	if err != nil || stored.Status != core.MsgFailed || stored.FailReason != "re-engagement window closed" {
		t.Errorf("stored failed message = %+v (err %v)", stored, err)
	}

	// A resend links to the failed message.
	m3 := agentText(1, "outside the window", at(3*time.Second))
	m3.ResendOf = m2.ID
	if r := appendMsg(t, s, conv.ID, m3).Message; r.ResendOf != m2.ID {
		t.Errorf("resend = %+v", r)
	} else if got, _ := s.Message(ctx, r.ID); got.ResendOf != m2.ID {
		t.Errorf("stored resend = %+v", got)
	}
}

func testMessageByExternalID(t *testing.T, s core.Store) {
	wa := ingest(t, s, "wa", "1", "hi", t0).Conversation
	ingest(t, s, "tg", "1", "hi", t0)
	m := appendMsg(t, s, wa.ID, agentText(1, "reply", at(time.Second))).Message
	got, changed, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: m.ID, Status: core.MsgDelivered,
		ExternalID: "wamid.ABC"})
	if err != nil || !changed || got.ExternalID != "wamid.ABC" {
		t.Fatalf("UpdateStatus: %+v %v %v", got, changed, err)
	}
	found, err := s.MessageByExternalID(ctx, "wa", "wamid.ABC")
	if err != nil || found.ID != m.ID || found.Status != core.MsgDelivered {
		t.Errorf("MessageByExternalID = %+v, %v", found, err)
	}
	// A receipt that got ahead of the send's answer: the late "sent" does
	// not move the status back, and its id is kept; a later id does not
	// replace it.
	early := appendMsg(t, s, wa.ID, agentText(1, "another reply", at(2*time.Second))).Message
	if _, _, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: early.ID, Status: core.MsgDelivered}); err != nil {
		t.Fatal(err)
	}
	got, changed, err = s.UpdateStatus(ctx, core.StatusUpdate{MessageID: early.ID, Status: core.MsgSent, ExternalID: "wamid.LATE"})
	if err != nil || changed || got.Status != core.MsgDelivered || got.ExternalID != "wamid.LATE" {
		t.Errorf("late sent with its id: %+v changed %v err %v, want delivered with wamid.LATE, unchanged", got, changed, err)
	}
	if _, _, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: early.ID, Status: core.MsgSent, ExternalID: "wamid.OTHER"}); err != nil {
		t.Fatal(err)
	}
	if found, err := s.MessageByExternalID(ctx, "wa", "wamid.LATE"); err != nil || found.ID != early.ID || found.Status != core.MsgDelivered {
		t.Errorf("MessageByExternalID(wamid.LATE) = %+v, %v", found, err)
	}
	// Another channel does not know it.
	_, err = s.MessageByExternalID(ctx, "tg", "wamid.ABC")
	wantErr(t, "other channel", err, core.ErrNotFound)
	_, err = s.MessageByExternalID(ctx, "wa", "wamid.XYZ")
	wantErr(t, "unknown id", err, core.ErrNotFound)
}

func testAtomicTake(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	const n = 20
	agents := make([]core.Agent, n)
	for i := range agents {
		agents[i] = newAgent(t, s, fmt.Sprintf("agent%d@example.com", i))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Assign(ctx, core.Assignment{ConversationID: conv.ID, AgentID: agents[i].ID, From: 0,
				At: at(time.Second), Event: core.Message{SenderKind: core.SenderSystem, Kind: core.KindEvent,
					Visibility: core.Public, Event: &core.Event{Type: core.EventAssigned, AgentID: agents[i].ID}}})
		})
	}
	close(start)
	wg.Wait()
	winner := int64(0)
	for i, err := range errs {
		switch {
		case err == nil:
			if winner != 0 {
				t.Fatalf("agents %d and %d both took the conversation", winner, agents[i].ID)
			}
			winner = agents[i].ID
		case !errors.Is(err, core.ErrConflict):
			t.Errorf("agent %d: %v, want ErrConflict", agents[i].ID, err)
		}
	}
	if winner == 0 {
		t.Fatal("nobody took the conversation")
	}
	c := conversation(t, s, conv.ID)
	if c.AssigneeID != winner || c.Status != core.StatusOpen || c.LastSeq != 2 {
		t.Errorf("conversation = %+v, want open, assigned to %d, last seq 2", c, winner)
	}
	ms := messages(t, s, core.MessageQuery{ConversationID: conv.ID})
	if len(ms) != 2 || ms[1].Kind != core.KindEvent || ms[1].Event == nil || ms[1].Event.AgentID != winner {
		t.Errorf("messages = %+v", ms)
	}
}

func testCapacity(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	c1 := ingest(t, s, "web", "v1", "hi", t0).Conversation
	c2 := ingest(t, s, "web", "v2", "hi", t0).Conversation
	c3 := ingest(t, s, "web", "v3", "hi", t0).Conversation
	assign(t, s, c1.ID, agent.ID, 0, at(time.Second))
	assign(t, s, c2.ID, agent.ID, 0, at(time.Second))
	_, err := s.Assign(ctx, asg(c3.ID, agent.ID, 0, 2, at(time.Second)))
	wantErr(t, "third conversation", err, core.ErrCapacity)
	if c := conversation(t, s, c3.ID); c.Status != core.StatusPending || c.AssigneeID != 0 || c.LastSeq != 1 {
		t.Errorf("refused conversation changed: %+v", c)
	}
	// The conversation being assigned does not count against the agent.
	if _, err := s.Assign(ctx, asg(c2.ID, agent.ID, agent.ID, 2, at(2*time.Second))); err != nil {
		t.Errorf("re-assigning an agent's own conversation at capacity: %v", err)
	}
	// Resolved conversations do not count.
	if _, err := setStatus(s, c1.ID, core.StatusResolved, core.StatusOpen, at(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assign(ctx, asg(c3.ID, agent.ID, 0, 2, at(4*time.Second))); err != nil {
		t.Errorf("assign after resolving one: %v", err)
	}
	// MaxOpen 0 is no limit.
	c4 := ingest(t, s, "web", "v4", "hi", t0).Conversation
	if _, err := s.Assign(ctx, asg(c4.ID, agent.ID, 0, 0, at(5*time.Second))); err != nil {
		t.Errorf("assign without limit: %v", err)
	}
}

// testAssignInactive: an agent deactivated (by another node, say) is
// refused by the store itself, with or without a capacity limit.
func testAssignInactive(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	agent.Active = false
	if err := UpdateAgent(s, agent); err != nil {
		t.Fatal(err)
	}
	c := ingest(t, s, "web", "v1", "hi", t0).Conversation
	for _, maxOpen := range []int{0, 5} {
		_, err := s.Assign(ctx, asg(c.ID, agent.ID, 0, maxOpen, at(time.Second)))
		wantErr(t, fmt.Sprintf("assigning to a deactivated agent (max open %d)", maxOpen), err, core.ErrForbidden)
	}
	if got := conversation(t, s, c.ID); got.Status != core.StatusPending || got.AssigneeID != 0 || got.LastSeq != 1 {
		t.Errorf("refused conversation changed: %+v", got)
	}
	// Back to the queue needs no agent.
	agent.Active = true
	if err := UpdateAgent(s, agent); err != nil {
		t.Fatal(err)
	}
	assign(t, s, c.ID, agent.ID, 0, at(2*time.Second))
	agent.Active = false
	if err := UpdateAgent(s, agent); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assign(ctx, asg(c.ID, 0, agent.ID, 0, at(3*time.Second))); err != nil {
		t.Errorf("unassigning a deactivated agent's conversation: %v", err)
	}
	equalTime(t, "QueuedAt after an unassignment", conversation(t, s, c.ID).QueuedAt, at(3*time.Second))
	// Taken back by kefu (KeepPlace), it keeps its place in the queue.
	assign(t, s, c.ID, newAgent(t, s, "b@example.com").ID, 0, at(4*time.Second))
	back := asg(c.ID, 0, conversation(t, s, c.ID).AssigneeID, 0, at(5*time.Second))
	back.KeepPlace = true
	if _, err := s.Assign(ctx, back); err != nil {
		t.Fatal(err)
	}
	equalTime(t, "QueuedAt after an unassignment keeping the place", conversation(t, s, c.ID).QueuedAt, at(3*time.Second))
}

func testAssignAll(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	bob := newAgent(t, s, "bob@example.com")
	c1 := ingest(t, s, "web", "v1", "hi", t0).Conversation
	c2 := ingest(t, s, "web", "v2", "hi", t0).Conversation
	c3 := ingest(t, s, "web", "v3", "hi", t0).Conversation
	// Capacity is counted as the assignments go: alice has room for two.
	done, err := s.AssignAll(ctx, []core.Assignment{
		asg(c1.ID, alice.ID, 0, 2, at(time.Second)),
		asg(c2.ID, bob.ID, 0, 2, at(time.Second)),
		asg(c3.ID, alice.ID, 0, 2, at(time.Second)),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ conv, agent int64 }{{c1.ID, alice.ID}, {c2.ID, bob.ID}, {c3.ID, alice.ID}}
	if len(done) != len(want) {
		t.Fatalf("AssignAll returned %d changes, want %d", len(done), len(want))
	}
	var lastID int64
	for i, w := range want {
		ch := done[i]
		if ch.Conversation.ID != w.conv || ch.Conversation.AssigneeID != w.agent || ch.Conversation.Status != core.StatusOpen ||
			ch.Conversation.LastSeq != 2 {
			t.Errorf("change %d: conversation %+v, want %d open with %d, last seq 2", i, ch.Conversation, w.conv, w.agent)
		}
		if ch.Event.ID <= lastID || ch.Event.Seq != 2 || ch.Event.Event == nil || ch.Event.Event.Type != core.EventAssigned ||
			ch.Event.Event.AgentID != w.agent {
			t.Errorf("change %d: event %+v, want assigned to %d with an ID above %d", i, ch.Event, w.agent, lastID)
		}
		lastID = ch.Event.ID
		if c := conversation(t, s, w.conv); c.AssigneeID != w.agent || c.Status != core.StatusOpen || c.LastSeq != 2 {
			t.Errorf("stored conversation %d = %+v", w.conv, c)
		}
	}
	if counts, err := s.OpenCounts(ctx); err != nil || counts[alice.ID] != 2 || counts[bob.ID] != 1 {
		t.Errorf("open counts = %v, %v; want alice 2, bob 1", counts, err)
	}
	if done, err := s.AssignAll(ctx, nil); err != nil || len(done) != 0 {
		t.Errorf("AssignAll of none = %v, %v", done, err)
	}
}

func testAssignAllStops(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	var convs []core.Conversation
	for _, v := range []string{"v1", "v2", "v3", "v4", "v5"} {
		convs = append(convs, ingest(t, s, "web", v, "hi", t0).Conversation)
	}
	pending := func(c core.Conversation) {
		t.Helper()
		if got := conversation(t, s, c.ID); got.Status != core.StatusPending || got.AssigneeID != 0 || got.LastSeq != 1 {
			t.Errorf("conversation %d changed: %+v", c.ID, got)
		}
	}
	// stopsAfter runs AssignAll, wants err and the first assignment done.
	stopsAfter := func(what string, target error, as ...core.Assignment) []core.Changed {
		t.Helper()
		done, err := s.AssignAll(ctx, as)
		wantErr(t, what, err, target)
		if len(done) != 1 || done[0].Conversation.ID != as[0].ConversationID {
			t.Fatalf("changes before the %s = %+v, want conversation %d's", what, done, as[0].ConversationID)
		}
		return done
	}
	// The second is over the agent's capacity of 1: the first stays
	// assigned, the second is refused, the third is not tried though it
	// would have fit (no limit).
	done := stopsAfter("refusal", core.ErrCapacity,
		asg(convs[0].ID, agent.ID, 0, 1, at(time.Second)),
		asg(convs[1].ID, agent.ID, 0, 1, at(time.Second)),
		asg(convs[2].ID, agent.ID, 0, 0, at(time.Second)))
	if done[0].Conversation.AssigneeID != agent.ID {
		t.Fatalf("changes before the refusal = %+v, want conversation %d assigned", done, convs[0].ID)
	}
	if c := conversation(t, s, convs[0].ID); c.AssigneeID != agent.ID || c.LastSeq != 2 {
		t.Errorf("first conversation = %+v, want assigned", c)
	}
	pending(convs[1])
	pending(convs[2])

	// A conflict (already assigned) and an invalid request stop it the same way.
	stopsAfter("conflict", core.ErrConflict,
		asg(convs[2].ID, agent.ID, 0, 0, at(2*time.Second)),
		asg(convs[0].ID, agent.ID, 0, 0, at(2*time.Second)),
		asg(convs[3].ID, agent.ID, 0, 0, at(2*time.Second)))
	pending(convs[3])
	stopsAfter("invalid agent", core.ErrInvalid,
		asg(convs[3].ID, agent.ID, 0, 0, at(3*time.Second)),
		asg(convs[4].ID, -1, 0, 0, at(3*time.Second)))
	pending(convs[4])
	// A first one that fails changes nothing.
	done, err := s.AssignAll(ctx, []core.Assignment{
		asg(convs[0].ID, agent.ID, 0, 0, at(4*time.Second)),
		asg(convs[4].ID, agent.ID, 0, 0, at(4*time.Second)),
	})
	wantErr(t, "first already assigned", err, core.ErrConflict)
	if len(done) != 0 {
		t.Errorf("changes = %+v, want none", done)
	}
	pending(convs[4])
	// Message IDs stay in commit order after the rolled-back ones.
	ch := assign(t, s, convs[4].ID, agent.ID, 0, at(5*time.Second))
	ms := messages(t, s, core.MessageQuery{ConversationID: convs[3].ID})
	if last := ms[len(ms)-1]; ch.Event.ID <= last.ID {
		t.Errorf("event ID %d not above the earlier one's %d", ch.Event.ID, last.ID)
	}
}

func testTransfer(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	bob := newAgent(t, s, "bob@example.com")
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	assign(t, s, conv.ID, alice.ID, 0, at(time.Second))
	// A stale From is a conflict, even when it names the agent asking.
	_, err := s.Assign(ctx, asg(conv.ID, alice.ID, 0, 0, at(2*time.Second)))
	wantErr(t, "take an assigned conversation", err, core.ErrConflict)
	_, err = s.Assign(ctx, asg(conv.ID, bob.ID, bob.ID, 0, at(2*time.Second)))
	wantErr(t, "transfer from the wrong agent", err, core.ErrConflict)
	ch, err := s.Assign(ctx, core.Assignment{ConversationID: conv.ID, AgentID: bob.ID, From: alice.ID,
		At: at(3 * time.Second), Event: core.Message{SenderKind: core.SenderAgent, SenderID: alice.ID,
			Kind: core.KindEvent, Visibility: core.Internal,
			Event: &core.Event{Type: core.EventTransferred, AgentID: bob.ID, FromID: alice.ID, ByID: alice.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Conversation.AssigneeID != bob.ID || ch.Conversation.Status != core.StatusOpen || ch.Conversation.LastSeq != 3 {
		t.Errorf("after transfer: %+v", ch.Conversation)
	}
	ev := ch.Event
	if ev.Seq != 3 || ev.ID == 0 || ev.Visibility != core.Internal || ev.SenderKind != core.SenderAgent ||
		ev.Event == nil || *ev.Event != (core.Event{Type: core.EventTransferred, AgentID: bob.ID, FromID: alice.ID, ByID: alice.ID}) {
		t.Errorf("transfer event = %+v", ev)
	}
	equalTime(t, "event CreatedAt", ev.CreatedAt, at(3*time.Second))
	stored, err := s.Message(ctx, ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, "stored event", stored, ev)
	sameConversation(t, "stored", conversation(t, s, conv.ID), ch.Conversation)
}

func testUnassign(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	assign(t, s, conv.ID, agent.ID, 0, at(time.Second))
	if q, err := s.Queue(ctx, 10); err != nil || len(q) != 0 {
		t.Fatalf("queue after assign = %v, %v", q, err)
	}
	ch, err := s.Assign(ctx, core.Assignment{ConversationID: conv.ID, AgentID: 0, From: agent.ID, At: at(time.Minute),
		Event: core.Message{SenderKind: core.SenderSystem, Kind: core.KindEvent, Visibility: core.Internal,
			Event: &core.Event{Type: core.EventUnassigned, FromID: agent.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	c := ch.Conversation
	if c.Status != core.StatusPending || c.AssigneeID != 0 || ch.Event.Seq != 3 {
		t.Errorf("after unassign: %+v, event %+v", c, ch.Event)
	}
	equalTime(t, "QueuedAt", c.QueuedAt, at(time.Minute))
	q, err := s.Queue(ctx, 10)
	if err != nil || len(q) != 1 || q[0].ID != conv.ID {
		t.Errorf("queue = %+v, %v", q, err)
	}
	if n, err := s.OpenCounts(ctx); err != nil || n[agent.ID] != 0 {
		t.Errorf("open counts = %v, %v", n, err)
	}
}

func testQueueOrder(t *testing.T, s core.Store) {
	c1 := ingest(t, s, "web", "v1", "hi", at(3*time.Second)).Conversation
	c2 := ingest(t, s, "web", "v2", "hi", at(1*time.Second)).Conversation
	c3 := ingest(t, s, "web", "v3", "hi", at(2*time.Second)).Conversation
	c4 := ingest(t, s, "web", "v4", "hi", at(1*time.Second)).Conversation // ties with c2: by ID
	c5 := ingest(t, s, "web", "v5", "hi", t0).Conversation
	agent := newAgent(t, s, "a@example.com")
	assign(t, s, c5.ID, agent.ID, 0, at(time.Second)) // open: not queued
	q, err := s.Queue(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(q, convID), []int64{c2.ID, c4.ID, c3.ID, c1.ID}; !slices.Equal(got, want) {
		t.Errorf("queue = %v, want %v", got, want)
	}
	q, err = s.Queue(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(q, convID), []int64{c2.ID, c4.ID}; !slices.Equal(got, want) {
		t.Errorf("queue limit 2 = %v, want %v", got, want)
	}
	// Places in the same order; 0 for what does not wait.
	for id, want := range map[int64]int{c2.ID: 1, c4.ID: 2, c3.ID: 3, c1.ID: 4, c5.ID: 0, 9999: 0} {
		if got, err := s.QueuePosition(ctx, id); err != nil || got != want {
			t.Errorf("QueuePosition(%d) = %d, %v; want %d", id, got, err, want)
		}
	}
}

func testOpenCounts(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	bob := newAgent(t, s, "bob@example.com")
	n, err := s.OpenCounts(ctx)
	if err != nil || len(n) != 0 {
		t.Fatalf("empty store: %v, %v", n, err)
	}
	var cs []core.Conversation
	for i := range 5 {
		cs = append(cs, ingest(t, s, "web", "v"+strconv.Itoa(i), "hi", t0).Conversation)
	}
	assign(t, s, cs[0].ID, alice.ID, 0, at(time.Second))
	assign(t, s, cs[1].ID, alice.ID, 0, at(time.Second))
	assign(t, s, cs[2].ID, alice.ID, 0, at(time.Second))
	assign(t, s, cs[3].ID, bob.ID, 0, at(time.Second))
	if _, err := setStatus(s, cs[2].ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	n, err = s.OpenCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 2 || n[alice.ID] != 2 || n[bob.ID] != 1 {
		t.Errorf("open counts = %v, want alice 2, bob 1", n)
	}
}

func testSetStatus(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	conv := ingest(t, s, "web", "v1", "hi", t0).Conversation
	assign(t, s, conv.ID, agent.ID, 0, at(time.Second))

	_, err := setStatus(s, conv.ID, core.StatusResolved, core.StatusPending, at(time.Minute))
	wantErr(t, "resolve from the wrong status", err, core.ErrConflict)
	ch, err := setStatus(s, conv.ID, core.StatusResolved, core.StatusOpen, at(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c := ch.Conversation
	if c.Status != core.StatusResolved || c.AssigneeID != agent.ID || c.LastSeq != 3 {
		t.Errorf("resolved = %+v", c)
	}
	equalTime(t, "ResolvedAt", c.ResolvedAt, at(time.Minute))
	if ch.Event.Seq != 3 || ch.Event.Event == nil || ch.Event.Event.Type != core.EventResolved {
		t.Errorf("resolve event = %+v", ch.Event)
	}
	sameConversation(t, "stored", conversation(t, s, conv.ID), c)

	// Two agents closing at once: one wins.
	_, err = setStatus(s, conv.ID, core.StatusResolved, core.StatusOpen, at(time.Minute))
	wantErr(t, "resolve twice", err, core.ErrConflict)
	// A resolved conversation cannot be assigned.
	_, err = s.Assign(ctx, asg(conv.ID, agent.ID, agent.ID, 0, at(time.Minute)))
	wantErr(t, "assign resolved", err, core.ErrConflict)

	// Reopen with an assignee: open.
	ch, err = setStatus(s, conv.ID, core.StatusOpen, core.StatusResolved, at(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Conversation.Status != core.StatusOpen || ch.Conversation.AssigneeID != agent.ID ||
		ch.Event.Seq != 4 || ch.Event.Event == nil || ch.Event.Event.Type != core.EventReopened {
		t.Errorf("reopened = %+v, event %+v", ch.Conversation, ch.Event)
	}
	_, err = setStatus(s, conv.ID, core.StatusOpen, core.StatusResolved, at(2*time.Minute))
	wantErr(t, "reopen twice", err, core.ErrConflict)

	// Reopen without an assignee: pending, queued now.
	other := ingest(t, s, "web", "v2", "hi", t0).Conversation
	if _, err := setStatus(s, other.ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ch, err = setStatus(s, other.ID, core.StatusOpen, "", at(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Conversation.Status != core.StatusPending || ch.Conversation.AssigneeID != 0 {
		t.Errorf("reopened unassigned = %+v", ch.Conversation)
	}
	equalTime(t, "QueuedAt", ch.Conversation.QueuedAt, at(3*time.Minute))
	if q, err := s.Queue(ctx, 10); err != nil || len(q) != 1 || q[0].ID != other.ID {
		t.Errorf("queue = %+v, %v", q, err)
	}
}

func testReopenConflict(t *testing.T, s core.Store) {
	old := ingest(t, s, "web", "v1", "hi", t0).Conversation
	if _, err := setStatus(s, old.ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	cur := ingest(t, s, "web", "v1", "hi", at(3*time.Hour)).Conversation
	if cur.ID == old.ID {
		t.Fatal("expected a new conversation")
	}
	// The identity already has a live conversation: the old one cannot
	// come back beside it.
	_, err := setStatus(s, old.ID, core.StatusOpen, core.StatusResolved, at(4*time.Hour))
	wantErr(t, "reopen beside a live conversation", err, core.ErrConflict)
	if c := conversation(t, s, old.ID); c.Status != core.StatusResolved || c.LastSeq != 2 {
		t.Errorf("old conversation changed: %+v", c)
	}
	// The failed write left no trace: the next message takes seq 3.
	note := agentText(1, "note on the old conversation", at(5*time.Hour))
	note.Visibility = core.Internal
	if r := appendMsg(t, s, old.ID, note); r.Message.Seq != 3 || r.Conversation.Status != core.StatusResolved {
		t.Errorf("append after the failed reopen: seq %d, conversation %+v", r.Message.Seq, r.Conversation)
	}
}

func testMarkUpTo(t *testing.T, s core.Store) {
	agent := newAgent(t, s, "a@example.com")
	r := ingest(t, s, "app", "u1", "hi", t0) // seq 1, from the contact
	conv := r.Conversation.ID
	reply := agentText(agent.ID, "hello", at(time.Second))
	reply.Status = core.MsgPending
	appendMsg(t, s, conv, reply) // seq 2
	note := agentText(agent.ID, "note to self", at(2*time.Second))
	note.Visibility = core.Internal
	appendMsg(t, s, conv, note)                                           // seq 3, internal
	appendMsg(t, s, conv, agentText(agent.ID, "more", at(3*time.Second))) // seq 4
	ingest(t, s, "app", "u1", "thanks", at(4*time.Second))                // seq 5, from the contact

	status := func() map[int64]core.MessageStatus {
		out := map[int64]core.MessageStatus{}
		for _, m := range messages(t, s, core.MessageQuery{ConversationID: conv}) {
			out[m.Seq] = m.Status
		}
		return out
	}
	mark := func(r core.Receipt, want int) {
		t.Helper()
		n, err := s.MarkUpTo(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("MarkUpTo(%+v) changed %d, want %d", r, n, want)
		}
	}
	// The customer's app received up to seq 3: only the public reply moves.
	mark(core.Receipt{ConversationID: conv, UpToSeq: 3, Status: core.MsgDelivered, ByContact: true}, 1)
	if st := status(); st[2] != core.MsgDelivered || st[3] != core.MsgSent || st[1] != core.MsgSent {
		t.Errorf("after contact delivered ≤3: %v", st)
	}
	// They read everything: seq 2 and 4.
	mark(core.Receipt{ConversationID: conv, UpToSeq: 5, Status: core.MsgRead, ByContact: true}, 2)
	// A late delivered receipt moves nothing back.
	mark(core.Receipt{ConversationID: conv, UpToSeq: 5, Status: core.MsgDelivered, ByContact: true}, 0)
	// The agent read up to seq 4: the customer's seq 1.
	mark(core.Receipt{ConversationID: conv, UpToSeq: 4, Status: core.MsgRead}, 1)
	mark(core.Receipt{ConversationID: conv, UpToSeq: 5, Status: core.MsgDelivered}, 1)
	want := map[int64]core.MessageStatus{1: core.MsgRead, 2: core.MsgRead, 3: core.MsgSent, 4: core.MsgRead,
		5: core.MsgDelivered}
	if st := status(); !mapsEqual(st, want) {
		t.Errorf("statuses = %v, want %v", st, want)
	}
	// A failed message stays failed.
	failed := appendMsg(t, s, conv, agentText(agent.ID, "lost", at(5*time.Second))).Message // seq 6
	if _, _, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: failed.ID, Status: core.MsgFailed, Reason: "blocked"}); err != nil {
		t.Fatal(err)
	}
	mark(core.Receipt{ConversationID: conv, UpToSeq: 6, Status: core.MsgRead, ByContact: true}, 0)

	_, err := s.MarkUpTo(ctx, core.Receipt{ConversationID: conv, UpToSeq: 6, Status: core.MsgSent})
	wantErr(t, "receipt status sent", err, core.ErrInvalid)
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testAgents(t *testing.T, s core.Store) {
	alice, err := s.CreateAgent(ctx, core.Agent{Email: "Alice@Example.com", Name: "Alice", Role: core.RoleAdmin,
		PasswordHash: "$2a$10$hash", Active: true, WeComUserID: "alice", SlackUser: "U0ALICE", CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	if alice.ID == 0 {
		t.Fatal("no ID")
	}
	bob := newAgent(t, s, "bob@example.com")
	_, err = s.CreateAgent(ctx, core.Agent{Email: "alice@EXAMPLE.com", Name: "Other", Role: core.RoleAgent})
	wantErr(t, "duplicate email", err, core.ErrConflict)
	// A link names one agent, Work WeChat's in any case; agents without
	// links are many.
	bob.WeComUserID = "ALICE"
	wantErr(t, "alice's wecom id in capitals", UpdateAgent(s, bob), core.ErrConflict)
	bob.WeComUserID, bob.SlackUser = "", "U0ALICE"
	wantErr(t, "alice's slack id", UpdateAgent(s, bob), core.ErrConflict)
	bob.SlackUser = ""
	_, err = s.CreateAgent(ctx, core.Agent{Email: "carol@example.com", Role: core.RoleAgent, WeComUserID: "Alice"})
	wantErr(t, "a new agent with alice's wecom id", err, core.ErrConflict)

	got, err := s.Agent(ctx, alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(t0) || got.Email != "Alice@Example.com" || got.Name != "Alice" ||
		got.Role != core.RoleAdmin || got.PasswordHash != "$2a$10$hash" || !got.Active ||
		got.WeComUserID != "alice" || got.SlackUser != "U0ALICE" {
		t.Errorf("Agent = %+v", got)
	}
	byEmail, err := s.AgentByEmail(ctx, "ALICE@example.COM")
	if err != nil || byEmail.ID != alice.ID {
		t.Errorf("AgentByEmail = %+v, %v", byEmail, err)
	}
	_, err = s.AgentByEmail(ctx, "carol@example.com")
	wantErr(t, "unknown email", err, core.ErrNotFound)

	alice.Name, alice.Active, alice.SlackUser = "Alice L.", false, ""
	// The last active admin stays one: nothing changes.
	wantErr(t, "deactivating the last active admin", UpdateAgent(s, alice), core.ErrConflict)
	if got, err := s.Agent(ctx, alice.ID); err != nil || !got.Active || got.Name != "Alice" {
		t.Errorf("after a refused update: %+v, %v", got, err)
	}
	demoted := alice
	demoted.Active, demoted.Role = true, core.RoleAgent
	wantErr(t, "demoting the last active admin", UpdateAgent(s, demoted), core.ErrConflict)
	bob.Role = core.RoleAdmin
	if err := UpdateAgent(s, bob); err != nil {
		t.Fatal(err)
	}
	if err := UpdateAgent(s, alice); err != nil { // bob is an admin now
		t.Fatal(err)
	}
	if got, err := s.Agent(ctx, alice.ID); err != nil || got.Name != "Alice L." || got.Active || got.SlackUser != "" ||
		got.WeComUserID != "alice" {
		t.Errorf("after update: %+v, %v", got, err)
	}
	bob.SlackUser = "U0ALICE" // free again
	if err := UpdateAgent(s, bob); err != nil {
		t.Fatalf("bob takes alice's old slack id: %v", err)
	}
	bob.Email = "ALICE@example.com"
	wantErr(t, "update to a taken email", UpdateAgent(s, bob), core.ErrConflict)
	bob.Email = "robert@example.com"
	if err := UpdateAgent(s, bob); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AgentByEmail(ctx, "Robert@example.com"); err != nil || got.ID != bob.ID {
		t.Errorf("by new email: %+v, %v", got, err)
	}
	wantErr(t, "update missing", s.UpdateAgent(ctx, core.Agent{ID: 999}, core.Agent{ID: 999, Email: "x@example.com", Role: core.RoleAgent}),
		core.ErrNotFound)

	all, err := s.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all, func(a core.Agent) int64 { return a.ID }); !slices.Equal(got, []int64{alice.ID, bob.ID}) {
		t.Errorf("Agents = %v", got)
	}
	if all[0].Active {
		t.Error("inactive agent listed as active")
	}
}

// testUpdateAgentStale: an update made from an agent read before another
// change (another node's) is refused with ErrStale and changes nothing, so
// that a deactivation does not bring back an old password, nor a password
// reset an agent deactivated meanwhile.
func testUpdateAgentStale(t *testing.T, s core.Store) {
	other := newAgent(t, s, "y@example.com")
	read := newAgent(t, s, "x@example.com") // both nodes read x
	reset := read
	reset.PasswordHash = "$2a$10$new"
	if err := s.UpdateAgent(ctx, read, reset); err != nil { // node 2 resets the password
		t.Fatal(err)
	}
	off := read
	off.Active = false // node 1 deactivates x from what it read
	err := s.UpdateAgent(ctx, read, off)
	wantErr(t, "a deactivation from a read before the password reset", err, core.ErrStale)
	wantErr(t, "a stale update", err, core.ErrConflict)
	if got, err := s.Agent(ctx, read.ID); err != nil || got.PasswordHash != "$2a$10$new" || !got.Active {
		t.Errorf("after a stale update: %+v, %v; want the reset kept and nothing else changed", got, err)
	}
	// Read again: it goes through.
	cur, err := s.Agent(ctx, read.ID)
	if err != nil {
		t.Fatal(err)
	}
	off = cur
	off.Active = false
	if err := s.UpdateAgent(ctx, cur, off); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Agent(ctx, read.ID); err != nil || got.PasswordHash != "$2a$10$new" || got.Active {
		t.Errorf("after the update from a fresh read: %+v, %v", got, err)
	}
	// Each field counts: a read that differs in any of them is stale.
	cur, _ = s.Agent(ctx, other.ID)
	for _, change := range []func(*core.Agent){
		func(a *core.Agent) { a.Email = "other@example.com" },
		func(a *core.Agent) { a.Name = "Other" },
		func(a *core.Agent) { a.Role = core.RoleAdmin },
		func(a *core.Agent) { a.PasswordHash = "other" },
		func(a *core.Agent) { a.Active = !a.Active },
		func(a *core.Agent) { a.WeComUserID = "other" },
		func(a *core.Agent) { a.SlackUser = "U0OTHER" },
	} {
		stale := cur
		change(&stale)
		next := cur
		next.Name = "Renamed"
		wantErr(t, "an update from a read that differs", s.UpdateAgent(ctx, stale, next), core.ErrStale)
	}
	if got, _ := s.Agent(ctx, other.ID); got.Name == "Renamed" {
		t.Error("a stale update renamed the agent")
	}
}

// testKeepsWindow: a message that keeps the reply window (a WeChat
// unfollow) is stored into the live conversation without moving its
// LastInboundAt, returned and stored alike; the customer's next message
// moves it, and the first one sent again (a provider's retry) changes
// nothing.
func testKeepsWindow(t *testing.T, s core.Store) {
	first := ingest(t, s, "wx", "o1", "hello", t0)
	keep := core.Inbound{Channel: "wx", ExternalID: "o1", ReopenWithin: time.Hour, KeepsWindow: true,
		Message: core.Message{Kind: core.KindText, Text: "[unfollowed]", CreatedAt: at(time.Minute), DedupKey: "p:wx:u1"}}
	r, err := s.Ingest(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Conversation; c.ID != first.Conversation.ID || !c.LastInboundAt.Equal(t0) || !c.UpdatedAt.Equal(at(time.Minute)) ||
		c.LastSeq != 2 || r.Message.Text != "[unfollowed]" {
		t.Fatalf("after the message that keeps the window: %+v", c)
	}
	stored, err := s.Conversation(ctx, r.Conversation.ID)
	if err != nil || !stored.LastInboundAt.Equal(t0) || !stored.UpdatedAt.Equal(at(time.Minute)) || stored.LastSeq != 2 {
		t.Fatalf("stored: %+v, %v", stored, err)
	}
	ingest(t, s, "wx", "o1", "I am back", at(2*time.Minute))
	if _, err := s.Ingest(ctx, keep); err != nil { // the provider's retry
		t.Fatal(err)
	}
	if c, err := s.Conversation(ctx, r.Conversation.ID); err != nil || !c.LastInboundAt.Equal(at(2*time.Minute)) || c.LastSeq != 3 {
		t.Errorf("after the next message and a retry: %+v, %v", c, err)
	}
}

// testLastAdminConcurrently: two active admins each demoted or deactivated
// at the same moment: one change is refused (ErrConflict), and one active
// admin remains.
func testLastAdminConcurrently(t *testing.T, s core.Store) {
	for round := range 10 {
		var admins [2]core.Agent
		for i := range admins {
			a, err := s.CreateAgent(ctx, core.Agent{Email: fmt.Sprintf("admin%d-%d@example.com", round, i),
				Role: core.RoleAdmin, Active: true, CreatedAt: t0})
			if err != nil {
				t.Fatal(err)
			}
			admins[i] = a
		}
		// Every other admin of the earlier rounds steps down first.
		all, err := s.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			if a.Active && a.Role == core.RoleAdmin && a.ID != admins[0].ID && a.ID != admins[1].ID {
				a.Active = false
				if err := UpdateAgent(s, a); err != nil {
					t.Fatal(err)
				}
			}
		}
		admins[0].Role = core.RoleAgent // demoted
		admins[1].Active = false        // deactivated
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range admins {
			wg.Go(func() { <-start; errs[i] = UpdateAgent(s, admins[i]) })
		}
		close(start)
		wg.Wait()
		refused := 0
		for _, err := range errs {
			switch {
			case errors.Is(err, core.ErrConflict):
				refused++
			case err != nil:
				t.Fatal(err)
			}
		}
		all, err = s.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		active := 0
		for _, a := range all {
			if a.Active && a.Role == core.RoleAdmin {
				active++
			}
		}
		if refused != 1 || active != 1 {
			t.Fatalf("round %d: %d of 2 changes refused, %d active admins left; want 1 and 1", round, refused, active)
		}
	}
}

func testOutboxDeliver(t *testing.T, s core.Store) {
	conv := ingest(t, s, "wa", "1", "hi", t0).Conversation
	m := agentText(1, "reply", at(time.Second))
	m.Status = core.MsgPending
	r, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: m, Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	e := r.Outbox
	if e == nil || e.ID == 0 || e.Channel != "wa" || e.Key != strconv.FormatInt(conv.ID, 10) ||
		e.MessageID != r.Message.ID || e.Attempts != 0 || e.Payload != nil {
		t.Fatalf("outbox entry = %+v", e)
	}
	equalTime(t, "NextAttemptAt", e.NextAttemptAt, at(time.Second))
	got, err := s.OutboxEntry(ctx, e.ID)
	if err != nil || got.ID != e.ID || got.MessageID != e.MessageID || got.Key != e.Key {
		t.Errorf("OutboxEntry = %+v, %v", got, err)
	}
	// Without Deliver there is no entry.
	if r2 := appendMsg(t, s, conv.ID, agentText(1, "note", at(2*time.Second))); r2.Outbox != nil {
		t.Errorf("append without Deliver enqueued %+v", r2.Outbox)
	}
	r3, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: agentText(1, "second", at(3*time.Second)),
		Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.OutboxHead(ctx, "wa", e.Key)
	if err != nil || head.ID != e.ID {
		t.Errorf("OutboxHead = %+v, %v; want %d", head, err, e.ID)
	}
	if err := s.FinishOutbox(ctx, e.ID, &core.StatusUpdate{MessageID: r.Message.ID, Status: core.MsgSent,
		ExternalID: "wamid.1"}); err != nil {
		t.Fatal(err)
	}
	head, err = s.OutboxHead(ctx, "wa", e.Key)
	if err != nil || head.ID != r3.Outbox.ID {
		t.Errorf("OutboxHead after finish = %+v, %v; want %d", head, err, r3.Outbox.ID)
	}
	msg, err := s.Message(ctx, r.Message.ID)
	if err != nil || msg.Status != core.MsgSent || msg.ExternalID != "wamid.1" {
		t.Errorf("message after finish = %+v, %v", msg, err)
	}
	_, err = s.OutboxHead(ctx, "wa", "nope")
	wantErr(t, "head of an empty key", err, core.ErrNotFound)
}

func testOutboxDue(t *testing.T, s core.Store) {
	a, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "wecom", Key: "alice", Payload: []byte(`{"n":1}`),
		NextAttemptAt: t0, CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || string(a.Payload) != `{"n":1}` {
		t.Fatalf("Enqueue = %+v", a)
	}
	b, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "slack", Key: "T1", Payload: []byte("x"),
		NextAttemptAt: at(time.Minute), CreatedAt: at(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "wecom", Key: "bob", Payload: []byte("y"), CreatedAt: at(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	equalTime(t, "default NextAttemptAt", c.NextAttemptAt, at(2*time.Second))
	got, err := s.OutboxEntry(ctx, a.ID)
	if err != nil || string(got.Payload) != `{"n":1}` || got.MessageID != 0 || got.Channel != "wecom" || got.Key != "alice" {
		t.Errorf("stored entry = %+v, %v", got, err)
	}
	equalTime(t, "stored CreatedAt", got.CreatedAt, t0)

	due := func(channel string, now time.Time, limit int) []int64 {
		t.Helper()
		es, err := s.Outbox(ctx, channel, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		return ids(es, func(e core.OutboxEntry) int64 { return e.ID })
	}
	if got, want := due("", at(10*time.Second), 10), []int64{a.ID, c.ID}; !slices.Equal(got, want) {
		t.Errorf("due at +10s = %v, want %v", got, want)
	}
	if got, want := due("", at(time.Minute), 10), []int64{a.ID, b.ID, c.ID}; !slices.Equal(got, want) {
		t.Errorf("due at +1m = %v, want %v", got, want)
	}
	if got, want := due("", at(time.Minute), 2), []int64{a.ID, b.ID}; !slices.Equal(got, want) {
		t.Errorf("due limit 2 = %v, want %v", got, want)
	}
	if got, want := due("slack", at(time.Minute), 10), []int64{b.ID}; !slices.Equal(got, want) {
		t.Errorf("due on slack = %v, want %v", got, want)
	}

	// A failed attempt pushes the entry back.
	if err := s.RetryOutbox(ctx, a.ID, at(5*time.Minute), "429 retry_after 300"); err != nil {
		t.Fatal(err)
	}
	got, err = s.OutboxEntry(ctx, a.ID)
	if err != nil || got.Attempts != 1 || got.LastError != "429 retry_after 300" {
		t.Errorf("after retry = %+v, %v", got, err)
	}
	equalTime(t, "NextAttemptAt after retry", got.NextAttemptAt, at(5*time.Minute))
	if got, want := due("wecom", at(time.Minute), 10), []int64{c.ID}; !slices.Equal(got, want) {
		t.Errorf("due after retry = %v, want %v", got, want)
	}
	// Entries queued behind a head that backs off are not listed, however
	// many: they must not fill a sweep's page and hide other keys.
	var behind []int64
	for i := range 3 {
		e, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "wecom", Key: "alice", Payload: []byte("later"),
			CreatedAt: at(time.Duration(3+i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		behind = append(behind, e.ID)
	}
	carol, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "wecom", Key: "carol", Payload: []byte("z"), CreatedAt: at(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	behind = append(behind, carol.ID) // finished below with them
	if got, want := due("wecom", at(time.Minute), 2), []int64{c.ID, carol.ID}; !slices.Equal(got, want) {
		t.Errorf("due behind a head that backs off = %v, want %v", got, want)
	}
	if got, want := due("", at(time.Minute), 10), []int64{b.ID, c.ID, carol.ID}; !slices.Equal(got, want) {
		t.Errorf("due on every channel behind a head that backs off = %v, want %v", got, want)
	}
	for _, id := range behind {
		if err := s.FinishOutbox(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RetryOutbox(ctx, a.ID, at(10*time.Minute), "again"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.OutboxEntry(ctx, a.ID); got.Attempts != 2 || got.LastError != "again" {
		t.Errorf("after second retry = %+v", got)
	}
	// The head of a key is still the failing entry: it delays its key.
	if head, err := s.OutboxHead(ctx, "wecom", "alice"); err != nil || head.ID != a.ID {
		t.Errorf("head = %+v, %v", head, err)
	}

	depth, oldest, err := s.OutboxStats(ctx)
	if err != nil || depth != 3 {
		t.Errorf("stats = %d, %v", depth, err)
	}
	equalTime(t, "oldest", oldest, t0)
	if err := s.FinishOutbox(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	depth, oldest, err = s.OutboxStats(ctx)
	if err != nil || depth != 2 {
		t.Errorf("stats = %d, %v", depth, err)
	}
	equalTime(t, "oldest after finish", oldest, at(time.Second))
	for _, e := range []core.OutboxEntry{b, c} {
		if err := s.FinishOutbox(ctx, e.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
	depth, oldest, err = s.OutboxStats(ctx)
	if err != nil || depth != 0 || !oldest.IsZero() {
		t.Errorf("empty stats = %d, %v, %v", depth, oldest, err)
	}
}

func testOutboxFinish(t *testing.T, s core.Store) {
	conv := ingest(t, s, "wa", "1", "hi", t0).Conversation
	m := agentText(1, "reply", at(time.Second))
	m.Status = core.MsgPending
	r, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: m, Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	// A finish whose status update fails leaves the entry in place.
	err = s.FinishOutbox(ctx, r.Outbox.ID, &core.StatusUpdate{MessageID: 999999, Status: core.MsgSent})
	wantErr(t, "finish with a missing message", err, core.ErrNotFound)
	if _, err := s.OutboxEntry(ctx, r.Outbox.ID); err != nil {
		t.Errorf("entry gone after a failed finish: %v", err)
	}
	// A permanent failure: the entry goes, the message fails with the reason.
	if err := s.FinishOutbox(ctx, r.Outbox.ID, &core.StatusUpdate{MessageID: r.Message.ID, Status: core.MsgFailed,
		Reason: "user blocked the bot"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.OutboxEntry(ctx, r.Outbox.ID)
	wantErr(t, "finished entry", err, core.ErrNotFound)
	msg, err := s.Message(ctx, r.Message.ID)
	if err != nil || msg.Status != core.MsgFailed || msg.FailReason != "user blocked the bot" {
		t.Errorf("message = %+v, %v", msg, err)
	}
	err = s.FinishOutbox(ctx, r.Outbox.ID, nil)
	wantErr(t, "finish twice", err, core.ErrNotFound)
	// A finish does not move a status back.
	r2, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: agentText(1, "x", at(2*time.Second)),
		Deliver: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: r2.Message.ID, Status: core.MsgRead}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishOutbox(ctx, r2.Outbox.ID, &core.StatusUpdate{MessageID: r2.Message.ID, Status: core.MsgSent}); err != nil {
		t.Fatal(err)
	}
	if msg, _ := s.Message(ctx, r2.Message.ID); msg.Status != core.MsgRead {
		t.Errorf("status after late finish = %s, want read", msg.Status)
	}
}

func testConversationsFilter(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	bob := newAgent(t, s, "bob@example.com")
	wa1 := ingest(t, s, "wa", "1", "hi", t0)
	wa2 := ingest(t, s, "wa", "2", "hi", t0)
	tg1 := ingest(t, s, "tg", "1", "hi", t0)
	web := ingest(t, s, "web", "v", "hi", t0)
	assign(t, s, wa1.Conversation.ID, alice.ID, 0, at(time.Second))
	assign(t, s, tg1.Conversation.ID, bob.ID, 0, at(time.Second))
	assign(t, s, web.Conversation.ID, alice.ID, 0, at(time.Second))
	if _, err := setStatus(s, web.Conversation.ID, core.StatusResolved, "", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wa1b := ingest(t, s, "wa", "1", "later", at(3*time.Hour)) // wa1 is open: same conversation
	if wa1b.Conversation.ID != wa1.Conversation.ID {
		t.Fatal("expected the same conversation")
	}
	webNew := ingest(t, s, "web", "v", "back", at(3*time.Hour)) // a new one: beyond ReopenWithin
	c1, c2, c3, c4, c5 := wa1.Conversation.ID, wa2.Conversation.ID, tg1.Conversation.ID, web.Conversation.ID,
		webNew.Conversation.ID

	for _, tc := range []struct {
		name string
		f    core.ConversationFilter
		want []int64
	}{
		{"all", core.ConversationFilter{}, []int64{c5, c4, c3, c2, c1}},
		{"open", core.ConversationFilter{Statuses: []core.ConversationStatus{core.StatusOpen}}, []int64{c3, c1}},
		{"pending or resolved", core.ConversationFilter{Statuses: []core.ConversationStatus{core.StatusPending,
			core.StatusResolved}}, []int64{c5, c4, c2}},
		{"alice", core.ConversationFilter{AssigneeID: alice.ID}, []int64{c4, c1}},
		{"alice open", core.ConversationFilter{AssigneeID: alice.ID, Statuses: []core.ConversationStatus{core.StatusOpen}},
			[]int64{c1}},
		{"unassigned", core.ConversationFilter{Unassigned: true}, []int64{c5, c2}},
		{"contact", core.ConversationFilter{ContactID: web.Contact.ID}, []int64{c5, c4}},
		{"channel", core.ConversationFilter{Channel: "wa"}, []int64{c2, c1}},
		{"identity", core.ConversationFilter{Channel: "wa", ExternalID: "1"}, []int64{c1}},
		{"external id", core.ConversationFilter{ExternalID: "1"}, []int64{c3, c1}},
		{"page 1", core.ConversationFilter{Limit: 2}, []int64{c5, c4}},
		{"page 2", core.ConversationFilter{Limit: 2, BeforeID: c4}, []int64{c3, c2}},
		{"page 3", core.ConversationFilter{Limit: 2, BeforeID: c2}, []int64{c1}},
		{"nothing", core.ConversationFilter{Channel: "slack"}, nil},
	} {
		cs, err := s.Conversations(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := ids(cs, convID); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// The default limit is 50.
	for i := range 60 {
		ingest(t, s, "web", "many"+strconv.Itoa(i), "hi", t0)
	}
	if cs, err := s.Conversations(ctx, core.ConversationFilter{}); err != nil || len(cs) != 50 {
		t.Errorf("default limit: %d conversations, %v", len(cs), err)
	}
	if cs, err := s.Conversations(ctx, core.ConversationFilter{Limit: 1000}); err != nil || len(cs) != 65 {
		t.Errorf("limit 1000: %d conversations, %v", len(cs), err)
	}
}

func testMessagesPaging(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v", "m1", t0).Conversation.ID // seq 1
	for i := 2; i <= 10; i++ {
		m := agentText(1, "m"+strconv.Itoa(i), at(time.Duration(i)*time.Second))
		if i%3 == 0 { // seqs 3, 6, 9 are notes
			m.Visibility = core.Internal
		}
		appendMsg(t, s, conv, m)
	}
	for _, tc := range []struct {
		name string
		q    core.MessageQuery
		want []int64
	}{
		{"all", core.MessageQuery{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"first page", core.MessageQuery{Limit: 3}, []int64{1, 2, 3}},
		{"after", core.MessageQuery{AfterSeq: 3, Limit: 3}, []int64{4, 5, 6}},
		{"after the end", core.MessageQuery{AfterSeq: 10}, nil},
		{"before", core.MessageQuery{BeforeSeq: 8, Limit: 3}, []int64{5, 6, 7}},
		{"before, near the start", core.MessageQuery{BeforeSeq: 3, Limit: 5}, []int64{1, 2}},
		{"latest", core.MessageQuery{BeforeSeq: 11, Limit: 4}, []int64{7, 8, 9, 10}},
		{"public", core.MessageQuery{PublicOnly: true}, []int64{1, 2, 4, 5, 7, 8, 10}},
		{"public after", core.MessageQuery{PublicOnly: true, AfterSeq: 2, Limit: 2}, []int64{4, 5}},
		{"public before", core.MessageQuery{PublicOnly: true, BeforeSeq: 10, Limit: 3}, []int64{5, 7, 8}},
	} {
		tc.q.ConversationID = conv
		got := seqs(messages(t, s, tc.q))
		if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: seqs %v, want %v", tc.name, got, tc.want)
		}
	}
	// Only this conversation's messages.
	other := ingest(t, s, "web", "w", "x", t0).Conversation.ID
	if ms := messages(t, s, core.MessageQuery{ConversationID: other}); len(ms) != 1 || ms[0].ConversationID != other {
		t.Errorf("other conversation: %+v", ms)
	}
	// Internal notes read back as stored.
	ms := messages(t, s, core.MessageQuery{ConversationID: conv, AfterSeq: 2, Limit: 1})
	if len(ms) != 1 || ms[0].Visibility != core.Internal || ms[0].Text != "m3" {
		t.Errorf("note = %+v", ms)
	}
}

func testFeed(t *testing.T, s core.Store) {
	a := ingest(t, s, "web", "a", "1", t0)
	b := ingest(t, s, "web", "b", "2", t0)
	n := appendMsg(t, s, a.Conversation.ID, core.Message{SenderKind: core.SenderAgent, SenderID: 1,
		Visibility: core.Internal, Kind: core.KindText, Text: "note", DedupKey: "c:agent-1:n1", CreatedAt: at(time.Second)})
	all, err := s.Feed(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	// Followers (Slack) recognise the messages they wrote themselves by
	// their key, so the feed carries it.
	if len(all) == 3 && all[2].DedupKey != "c:agent-1:n1" {
		t.Errorf("feed lost the dedup key: %q", all[2].DedupKey)
	}
	want := []int64{a.Message.ID, b.Message.ID, n.Message.ID}
	if got := ids(all, func(m core.Message) int64 { return m.ID }); !slices.Equal(got, want) {
		t.Errorf("feed = %v, want %v", got, want)
	}
	rest, err := s.Feed(ctx, a.Message.ID, 1)
	if err != nil || len(rest) != 1 || rest[0].ID != b.Message.ID {
		t.Errorf("feed after %d limit 1 = %+v, %v", a.Message.ID, rest, err)
	}
	if none, err := s.Feed(ctx, n.Message.ID, 10); err != nil || len(none) != 0 {
		t.Errorf("feed at the end = %+v, %v", none, err)
	}
}

func testNotFound(t *testing.T, s core.Store) {
	const missing = 424242
	conv := ingest(t, s, "web", "v", "hi", t0).Conversation
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"Conversation", func() error { _, err := s.Conversation(ctx, missing); return err }},
		{"Contact", func() error { _, err := s.Contact(ctx, missing); return err }},
		{"Message", func() error { _, err := s.Message(ctx, missing); return err }},
		{"MessageByExternalID", func() error { _, err := s.MessageByExternalID(ctx, "web", "nope"); return err }},
		{"Messages", func() error {
			_, err := s.Messages(ctx, core.MessageQuery{ConversationID: missing})
			return err
		}},
		{"Agent", func() error { _, err := s.Agent(ctx, missing); return err }},
		{"AgentByEmail", func() error { _, err := s.AgentByEmail(ctx, "nobody@example.com"); return err }},
		{"OutboxEntry", func() error { _, err := s.OutboxEntry(ctx, missing); return err }},
		{"OutboxHead", func() error { _, err := s.OutboxHead(ctx, "web", "1"); return err }},
		{"Append", func() error {
			_, err := s.Append(ctx, core.Append{ConversationID: missing, Message: agentText(1, "x", t0)})
			return err
		}},
		{"Assign", func() error {
			_, err := s.Assign(ctx, asg(missing, 1, 0, 0, t0))
			return err
		}},
		{"SetStatus", func() error {
			_, err := setStatus(s, missing, core.StatusResolved, "", t0)
			return err
		}},
		{"UpdateStatus", func() error {
			_, _, err := s.UpdateStatus(ctx, core.StatusUpdate{MessageID: missing, Status: core.MsgRead})
			return err
		}},
		{"MarkUpTo", func() error {
			_, err := s.MarkUpTo(ctx, core.Receipt{ConversationID: missing, UpToSeq: 1, Status: core.MsgRead})
			return err
		}},
		{"UpdateAgent", func() error {
			return s.UpdateAgent(ctx, core.Agent{ID: missing}, core.Agent{ID: missing, Email: "x@example.com", Role: core.RoleAgent})
		}},
		{"RetryOutbox", func() error { return s.RetryOutbox(ctx, missing, t0, "x") }},
		{"FinishOutbox", func() error { return s.FinishOutbox(ctx, missing, nil) }},
		{"Assign to a missing agent", func() error {
			_, err := s.Assign(ctx, asg(conv.ID, missing, 0, 0, t0))
			return err
		}},
	} {
		wantErr(t, tc.name, tc.err(), core.ErrNotFound)
	}
	if c := conversation(t, s, conv.ID); c.LastSeq != 1 || c.Status != core.StatusPending {
		t.Errorf("conversation changed by failed writes: %+v", c)
	}
}

// testBatchIsolation: writes that fail (a missing conversation, a taken
// conversation) in among good ones, all at once; every good one commits.
func testBatchIsolation(t *testing.T, s core.Store) {
	var cs []core.Conversation
	for i := range 4 {
		cs = append(cs, ingest(t, s, "web", "v"+strconv.Itoa(i), "hi", t0).Conversation)
	}
	agent := newAgent(t, s, "a@example.com")
	taken := ingest(t, s, "web", "taken", "hi", t0).Conversation
	assign(t, s, taken.ID, agent.ID, 0, at(time.Second))

	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			switch i % 4 {
			case 0:
				_, errs[i] = s.Append(ctx, core.Append{ConversationID: 999000 + int64(i),
					Message: agentText(1, "lost", at(time.Second))})
			case 1:
				_, errs[i] = s.Assign(ctx, asg(taken.ID, agent.ID, 0, 0, at(time.Second)))
			default:
				_, errs[i] = s.Append(ctx, core.Append{ConversationID: cs[i%len(cs)].ID,
					Message: agentText(1, "ok", at(time.Second)), Deliver: true})
			}
		})
	}
	close(start)
	wg.Wait()
	good := 0
	for i, err := range errs {
		switch i % 4 {
		case 0:
			wantErr(t, "append to a missing conversation", err, core.ErrNotFound)
		case 1:
			wantErr(t, "take a taken conversation", err, core.ErrConflict)
		default:
			if err != nil {
				t.Errorf("good append %d failed: %v", i, err)
			}
			good++
		}
	}
	total := 0
	for _, c := range cs {
		ms := messages(t, s, core.MessageQuery{ConversationID: c.ID, Limit: 1000})
		for i, m := range ms {
			if m.Seq != int64(i+1) {
				t.Fatalf("conversation %d: seqs %v", c.ID, seqs(ms))
			}
		}
		total += len(ms) - 1
	}
	if total != good {
		t.Errorf("%d messages stored, %d appends succeeded", total, good)
	}
	if depth, _, err := s.OutboxStats(ctx); err != nil || depth != good {
		t.Errorf("outbox depth %d (err %v), want %d", depth, err, good)
	}
	if c := conversation(t, s, taken.ID); c.AssigneeID != agent.ID || c.LastSeq != 2 {
		t.Errorf("taken conversation = %+v", c)
	}
}

func testCanceled(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v", "hi", t0).Conversation
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := s.Append(cctx, core.Append{ConversationID: conv.ID, Message: agentText(1, "x", t0)})
	wantErr(t, "append with a canceled context", err, context.Canceled)
	// The store is still usable.
	if r := appendMsg(t, s, conv.ID, agentText(1, "y", t0)); r.Message.Seq < 2 {
		t.Errorf("append after a canceled one: %+v", r.Message)
	}
}

func testClosed(t *testing.T, s core.Store) {
	conv := ingest(t, s, "web", "v", "hi", t0).Conversation
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"Ingest", func() error {
			_, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v",
				Message: core.Message{Kind: core.KindText, Text: "x"}})
			return err
		}},
		{"Append", func() error {
			_, err := s.Append(ctx, core.Append{ConversationID: conv.ID, Message: agentText(1, "x", t0)})
			return err
		}},
		{"Assign", func() error {
			_, err := s.Assign(ctx, asg(conv.ID, 1, 0, 0, t0))
			return err
		}},
		{"CreateAgent", func() error {
			_, err := s.CreateAgent(ctx, core.Agent{Email: "x@example.com", Role: core.RoleAgent})
			return err
		}},
		{"Conversation", func() error { _, err := s.Conversation(ctx, conv.ID); return err }},
		{"Conversations", func() error { _, err := s.Conversations(ctx, core.ConversationFilter{}); return err }},
		{"Messages", func() error {
			_, err := s.Messages(ctx, core.MessageQuery{ConversationID: conv.ID})
			return err
		}},
		{"Feed", func() error { _, err := s.Feed(ctx, 0, 10); return err }},
		{"Queue", func() error { _, err := s.Queue(ctx, 10); return err }},
		{"Outbox", func() error { _, err := s.Outbox(ctx, "", t0, 10); return err }},
		{"OutboxStats", func() error { _, _, err := s.OutboxStats(ctx); return err }},
		{"EnsureSetting", func() error { _, err := s.EnsureSetting(ctx, "k", "v"); return err }},
		{"Session", func() error { _, err := s.Session(ctx, "h"); return err }},
		{"Contacts", func() error { _, err := s.Contacts(ctx, []int64{1}); return err }},
	} {
		wantErr(t, tc.name+" after Close", tc.err(), core.ErrClosed)
	}
}

// VersionBefore returns the version of the migration before the one whose
// file name ends in suffix, among p's: a migration test brings a schema
// there, fills it as it could be then, and migrates it on.
func VersionBefore(t *testing.T, p *goose.Provider, suffix string) int64 {
	t.Helper()
	sources := p.ListSources()
	for i, src := range sources {
		if i > 0 && strings.HasSuffix(src.Path, suffix) {
			return sources[i-1].Version
		}
	}
	t.Fatalf("no migration before the one ending in %s among %d", suffix, len(sources))
	return 0
}

// UpdateAgent stores a as agent a.ID, over the agent as it is stored now
// (the store's UpdateAgent takes the agent as read, to refuse a change
// another made in between): for tests that set an agent up.
func UpdateAgent(s core.Store, a core.Agent) error {
	cur, err := s.Agent(ctx, a.ID)
	if err != nil {
		return err
	}
	return s.UpdateAgent(ctx, cur, a)
}
