package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
)

func TestMigrateFromEmpty(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	open(t, dsn, postgres.Options{})
	// A second node opening the migrated schema changes nothing.
	open(t, dsn, postgres.Options{})
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	p, err := goose.NewProvider(goose.DialectPostgres, db, postgres.Migrations())
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
	for _, table := range []string{"contacts", "identities", "conversations", "messages", "agents", "outbox",
		"settings", "sessions", "write_lock", "leases", "devices", "media_objects", "media_blobs", "media_parts"} {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = current_schema() AND table_name = $1`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: %d, %v", table, n, err)
		}
	}
}

// TestMigrateFromPrevious brings a schema to the previous version, fills it
// as that schema allows, and lets Open migrate it to the latest.
func TestMigrateFromPrevious(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	p, err := goose.NewProvider(goose.DialectPostgres, db, postgres.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	// The data below is as it could be before agent_links (links two
	// agents share), the migration whose repairs this test checks.
	previous := storetest.VersionBefore(t, p, "_agent_links.sql")
	if _, err := p.UpTo(ctx, previous); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO contacts (id, name, created_at) VALUES (1, 'Old Customer', $1)`, []any{t0}},
		{`INSERT INTO identities (channel, external_id, contact_id) VALUES ('wa', '86100', 1)`, nil},
		{`INSERT INTO agents (id, email, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (1, 'Alice@example.com', 'Alice', 'admin', 'h', true, 'alice', 'U0ALICE', $1)`, []any{t0}},
		// Links two nodes gave two agents at the same moment, before the
		// unique indexes: alice, the first, keeps them.
		{`INSERT INTO agents (id, email, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (2, 'bob@example.com', 'Bob', 'agent', 'h', true, 'ALICE', 'U0BOB', $1)`, []any{t0}},
		{`INSERT INTO agents (id, email, name, role, password_hash, active, wecom_userid, slack_user, created_at)
			VALUES (3, 'carl@example.com', 'Carl', 'agent', 'h', true, 'carl', 'U0ALICE', $1)`, []any{t0}},
		{`INSERT INTO conversations (id, contact_id, channel, external_id, status, assignee_id, last_seq,
			last_inbound_at, queued_at, created_at, updated_at)
			VALUES (1, 1, 'wa', '86100', 'open', 1, 2, $1, $1, $1, $1)`, []any{t0}},
		{`INSERT INTO messages (id, conversation_id, seq, sender_kind, sender_id, visibility, kind, text, status,
			dedup_key, created_at) VALUES (1, 1, 1, 'contact', 1, 'public', 'text', 'hello', 'sent', 'p:wa:w1', $1)`,
			[]any{t0}},
		{`INSERT INTO messages (id, conversation_id, seq, sender_kind, sender_id, visibility, kind, text, status,
			external_id, created_at) VALUES (2, 1, 2, 'agent', 1, 'public', 'text', 'hi', 'delivered', 'wamid.2', $1)`,
			[]any{t0.Add(time.Second)}},
		// Rows written with explicit IDs: move the sequences past them, as
		// the importer does.
		{`SELECT setval(pg_get_serial_sequence('messages', 'id'), 2)`, nil},
		{`SELECT setval(pg_get_serial_sequence('conversations', 'id'), 1)`, nil},
		{`SELECT setval(pg_get_serial_sequence('contacts', 'id'), 1)`, nil},
		{`SELECT setval(pg_get_serial_sequence('agents', 'id'), 3)`, nil},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}

	s := open(t, dsn, postgres.Options{})
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
	in, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "86100",
		Message: core.Message{Kind: core.KindText, Text: "still there?", DedupKey: "p:wa:w3",
			CreatedAt: t0.Add(time.Minute)}})
	if err != nil || in.NewContact || in.NewConversation || in.Conversation.ID != 1 || in.Message.Seq != 3 ||
		in.Message.ID != 3 {
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
	if err := s.CreateSession(ctx, core.Session{TokenHash: "h", AgentID: 1, ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}
