package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

func open(t testing.TB, path string, o sqlite.Options) *sqlite.Store {
	t.Helper()
	o.Path = path
	if o.Logger == nil {
		o.Logger = quiet
	}
	s, err := sqlite.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    sqlite.Options
	}{
		{"group commit", sqlite.Options{}},
		{"one write per transaction", sqlite.Options{MaxBatch: 1, Sync: "full"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) core.Store {
				return open(t, filepath.Join(t.TempDir(), "data", "kefu.db"), tc.o)
			})
		})
	}
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []sqlite.Options{
		{},
		{Path: ":memory:"},
		{Path: filepath.Join(t.TempDir(), "x.db"), Sync: "off"},
		{Path: filepath.Join(t.TempDir(), "x.db"), MaxBatch: -1},
	} {
		if s, err := sqlite.Open(ctx, o); !errors.Is(err, core.ErrInvalid) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("Open(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

// TestDurable writes, closes, reopens and reads back.
func TestDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	s, err := sqlite.Open(ctx, sqlite.Options{Path: path, Sync: "full", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "1", Name: "A",
		Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:wa:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ap, err := s.Append(ctx, core.Append{ConversationID: in.Conversation.ID, Deliver: true,
		Message: core.Message{SenderKind: core.SenderAgent, SenderID: 7, Kind: core.KindText, Text: "hi",
			Status: core.MsgPending}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path, sqlite.Options{})
	c, err := s.Conversation(ctx, in.Conversation.ID)
	if err != nil || c.LastSeq != 2 || c.ContactID != in.Contact.ID {
		t.Fatalf("conversation = %+v, %v", c, err)
	}
	ms, err := s.Messages(ctx, core.MessageQuery{ConversationID: c.ID})
	if err != nil || len(ms) != 2 || ms[0].Text != "hello" || ms[1].Text != "hi" || ms[1].Status != core.MsgPending {
		t.Fatalf("messages = %+v, %v", ms, err)
	}
	e, err := s.OutboxEntry(ctx, ap.Outbox.ID)
	if err != nil || e.MessageID != ap.Message.ID {
		t.Fatalf("outbox = %+v, %v", e, err)
	}
	// The dedup key survived too.
	again, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "1",
		Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:wa:1"}})
	if err != nil || !again.Duplicate || again.Message.ID != in.Message.ID {
		t.Fatalf("re-ingest = %+v, %v", again, err)
	}
	// And the sequence continues.
	next, err := s.Append(ctx, core.Append{ConversationID: c.ID,
		Message: core.Message{SenderKind: core.SenderAgent, SenderID: 7, Kind: core.KindText, Text: "more"}})
	if err != nil || next.Message.Seq != 3 || next.Message.ID <= ap.Message.ID {
		t.Fatalf("append after reopen = %+v, %v", next.Message, err)
	}
}

// TestCloseWaitsForQueuedWrites: writes accepted before Close commit.
func TestCloseWaitsForQueuedWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	s, err := sqlite.Open(ctx, sqlite.Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v",
		Message: core.Message{Kind: core.KindText, Text: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	results := make(chan error, n)
	for range n {
		go func() {
			_, err := s.Append(ctx, core.Append{ConversationID: in.Conversation.ID,
				Message: core.Message{SenderKind: core.SenderAgent, Kind: core.KindText, Text: "y"}})
			results <- err
		}()
	}
	time.Sleep(time.Millisecond) // let some of them queue
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for range n {
		switch err := <-results; {
		case err == nil:
			ok++
		case !errors.Is(err, core.ErrClosed):
			t.Errorf("append: %v", err)
		}
	}
	s = open(t, path, sqlite.Options{})
	c, err := s.Conversation(ctx, in.Conversation.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.LastSeq != int64(1+ok) {
		t.Errorf("last seq %d, %d appends acknowledged", c.LastSeq, ok)
	}
}

func TestMigrateFromEmpty(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	open(t, path, sqlite.Options{})
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sqlite.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if current != target || current < 3 {
		t.Errorf("version %d, latest %d", current, target)
	}
	for _, table := range []string{"contacts", "identities", "conversations", "messages", "agents", "outbox", "settings", "sessions", "leases", "devices"} {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`,
			table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: %d, %v", table, n, err)
		}
	}
}

// TestMigrateFromPrevious brings a file to the previous schema version, fills
// it as that schema allows, and lets Open migrate it to the latest.
func TestMigrateFromPrevious(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	db, err := sql.Open("sqlite", path+"?_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sqlite.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	// The data below is as it could be before agent_links (links two
	// agents share), the migration whose repairs this test checks.
	previous := storetest.VersionBefore(t, p, "_agent_links.sql")
	if _, err := p.UpTo(ctx, previous); err != nil {
		t.Fatal(err)
	}
	us := func(t time.Time) int64 { return t.UnixMicro() }
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO contacts (id, name, created_at) VALUES (1, 'Old Customer', ?)`, []any{us(t0)}},
		{`INSERT INTO identities (channel, external_id, contact_id) VALUES ('wa', '86100', 1)`, nil},
		{`INSERT INTO agents (id, email, email_key, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (1, 'Alice@example.com', 'alice@example.com', 'Alice', 'admin', 'h', 1, 'alice', 'U0ALICE', ?)`, []any{us(t0)}},
		// Links two nodes gave two agents at the same moment, before the
		// unique indexes: alice, the first, keeps them.
		{`INSERT INTO agents (id, email, email_key, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (2, 'bob@example.com', 'bob@example.com', 'Bob', 'agent', 'h', 1, 'ALICE', 'U0BOB', ?)`, []any{us(t0)}},
		{`INSERT INTO agents (id, email, email_key, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (3, 'carl@example.com', 'carl@example.com', 'Carl', 'agent', 'h', 1, 'carl', 'U0ALICE', ?)`, []any{us(t0)}},
		{`INSERT INTO conversations (id, contact_id, channel, external_id, status, assignee_id, last_seq,
			last_inbound_at, queued_at, created_at, updated_at)
			VALUES (1, 1, 'wa', '86100', 'open', 1, 2, ?, ?, ?, ?)`, []any{us(t0), us(t0), us(t0), us(t0)}},
		{`INSERT INTO messages (id, conversation_id, seq, sender_kind, sender_id, visibility, kind, text, status,
			dedup_key, created_at) VALUES (1, 1, 1, 'contact', 1, 'public', 'text', 'hello', 'sent', 'p:wa:w1', ?)`,
			[]any{us(t0)}},
		{`INSERT INTO messages (id, conversation_id, seq, sender_kind, sender_id, visibility, kind, text, status,
			external_id, created_at) VALUES (2, 1, 2, 'agent', 1, 'public', 'text', 'hi', 'delivered', 'wamid.2', ?)`,
			[]any{us(t0.Add(time.Second))}},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := open(t, path, sqlite.Options{})
	c, err := s.Conversation(ctx, 1)
	if err != nil || c.Status != core.StatusOpen || c.AssigneeID != 1 || c.LastSeq != 2 || !c.CreatedAt.Equal(t0) {
		t.Fatalf("conversation = %+v, %v", c, err)
	}
	a, err := s.AgentByEmail(ctx, "alice@EXAMPLE.com")
	if err != nil || a.ID != 1 || a.Role != core.RoleAdmin || !a.Active {
		t.Fatalf("agent = %+v, %v", a, err)
	}
	links := map[int64][2]string{1: {"alice", "U0ALICE"}, 2: {"", "U0BOB"}, 3: {"carl", ""}}
	for id, want := range links {
		got, err := s.Agent(ctx, id)
		if err != nil || got.WeComUserID != want[0] || got.SlackUser != want[1] {
			t.Errorf("agent %d after the migration: %+v, %v; want links %q", id, got, err, want)
		}
	}
	bob, _ := s.Agent(ctx, 2)
	bob.SlackUser = "U0ALICE"
	if err := storetest.UpdateAgent(s, bob); !errors.Is(err, core.ErrConflict) {
		t.Errorf("a taken link after the migration: %v, want ErrConflict", err)
	}
	m, err := s.MessageByExternalID(ctx, "wa", "wamid.2")
	if err != nil || m.ID != 2 || m.Status != core.MsgDelivered {
		t.Fatalf("message = %+v, %v", m, err)
	}
	// Usable: the old identity's next message lands in its conversation, and
	// the new outbox takes a reply to it.
	in, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "86100",
		Message: core.Message{Kind: core.KindText, Text: "still there?", DedupKey: "p:wa:w3",
			CreatedAt: t0.Add(time.Minute)}})
	if err != nil || in.NewContact || in.NewConversation || in.Conversation.ID != 1 || in.Message.Seq != 3 {
		t.Fatalf("ingest = %+v, %v", in, err)
	}
	dup, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "86100",
		Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:wa:w1"}})
	if err != nil || !dup.Duplicate || dup.Message.ID != 1 {
		t.Fatalf("old dedup key: %+v, %v", dup, err)
	}
	ap, err := s.Append(ctx, core.Append{ConversationID: 1, Deliver: true, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: 1, Kind: core.KindText, Text: "yes", Status: core.MsgPending}})
	if err != nil || ap.Outbox == nil || ap.Message.Seq != 4 {
		t.Fatalf("append = %+v, %v", ap, err)
	}
	if err := s.FinishOutbox(ctx, ap.Outbox.ID, &core.StatusUpdate{MessageID: ap.Message.ID,
		Status: core.MsgSent}); err != nil {
		t.Fatal(err)
	}
}
