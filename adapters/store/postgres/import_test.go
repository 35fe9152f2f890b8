package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
)

// fillSQLite writes a little of everything through the SQLite store's API.
func fillSQLite(t *testing.T, s core.Store) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	alice, err := s.CreateAgent(ctx, core.Agent{Email: "Alice@Example.com", Name: "Alice", Role: core.RoleAdmin,
		PasswordHash: "$2a$10$hash", Active: true, WeComUserID: "alice", SlackUser: "U0ALICE", CreatedAt: t0})
	must(err)
	bob, err := s.CreateAgent(ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Active: true, CreatedAt: t0})
	must(err)
	must(s.CreateSession(ctx, core.Session{TokenHash: "hash-a", AgentID: alice.ID, CreatedAt: t0,
		ExpiresAt: at(time.Hour), IP: "203.0.113.7", UserAgent: "Mozilla/5.0"}))
	must(s.CreateSession(ctx, core.Session{TokenHash: "hash-b", AgentID: bob.ID, CreatedAt: t0,
		ExpiresAt: at(2 * time.Hour)}))
	_, err = s.EnsureSetting(ctx, "web.secret", "s3cret")
	must(err)
	must(s.PutSetting(ctx, "slack.cursor", "42"))
	_, err = s.RegisterDevice(ctx, core.Device{Token: "abababababababababababababababababababababababababababababababab", Owner: core.AgentDevices(alice.ID),
		Topic: "com.example.console", Environment: core.PushSandbox, UpdatedAt: t0})
	must(err)
	_, err = s.RegisterDevice(ctx, core.Device{Token: "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", Owner: core.IdentityDevices("web", "u:42"), UpdatedAt: at(time.Minute)})
	must(err)

	// WhatsApp: text and image in, a delivered reply (sent, then read), a
	// note, an assignment, a failed reply and its resend, then resolved.
	wa, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "8613800000000", Name: "Zhang San",
		Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:wa:m1", CreatedAt: t0}})
	must(err)
	_, err = s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "8613800000000", Message: core.Message{
		Kind: core.KindImage, DedupKey: "p:wa:m2", CreatedAt: at(time.Second),
		Media: &core.Media{Key: "k/1", Name: "a.png", Type: "image/png", Size: 42, Preview: "k/1.preview"}}})
	must(err)
	_, err = s.Assign(ctx, core.Assignment{ConversationID: wa.Conversation.ID, AgentID: alice.ID, At: at(2 * time.Second)})
	must(err)
	reply, err := s.Append(ctx, core.Append{ConversationID: wa.Conversation.ID, Deliver: true, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: alice.ID, Text: "hi!", Status: core.MsgPending, DedupKey: "c:a:1",
		CreatedAt: at(3 * time.Second)}})
	must(err)
	must(s.FinishOutbox(ctx, reply.Outbox.ID, &core.StatusUpdate{Status: core.MsgSent, ExternalID: "wamid.1"}))
	_, err = s.MarkUpTo(ctx, core.Receipt{ConversationID: wa.Conversation.ID, UpToSeq: 4, Status: core.MsgRead,
		ByContact: true})
	must(err)
	_, err = s.Append(ctx, core.Append{ConversationID: wa.Conversation.ID, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: alice.ID, Visibility: core.Internal, Text: "VIP", CreatedAt: at(4 * time.Second)}})
	must(err)
	failed, err := s.Append(ctx, core.Append{ConversationID: wa.Conversation.ID, Deliver: true, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: alice.ID, Text: "late", Status: core.MsgPending, CreatedAt: at(25 * time.Hour)}})
	must(err)
	must(s.FinishOutbox(ctx, failed.Outbox.ID, &core.StatusUpdate{Status: core.MsgFailed, Reason: "window closed"}))
	_, err = s.Append(ctx, core.Append{ConversationID: wa.Conversation.ID, Deliver: true, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: alice.ID, Kind: core.KindTemplate, Text: "reopen", Status: core.MsgPending,
		ResendOf: failed.Message.ID, CreatedAt: at(25*time.Hour + time.Second)}}) // stays in the outbox
	must(err)
	_, err = s.SetStatus(ctx, core.StatusChange{ConversationID: wa.Conversation.ID, Status: core.StatusResolved,
		At: at(26 * time.Hour)})
	must(err)

	// Telegram: a chat that migrated to a new id, waiting in the queue.
	_, err = s.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "100", Name: "Li Si",
		Message: core.Message{Kind: core.KindFile, DedupKey: "p:tg:5", CreatedAt: at(time.Minute),
			Media: &core.Media{Key: "k/2", Name: "cv.pdf", Type: "application/pdf", Size: 1000}}})
	must(err)
	must(s.MoveIdentity(ctx, "tg", "100", "-100100"))

	// The web widget: a resolved conversation and a new one after it, open
	// with bob.
	web, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1", Message: core.Message{
		Kind: core.KindText, Text: "first visit", CreatedAt: t0}})
	must(err)
	_, err = s.SetStatus(ctx, core.StatusChange{ConversationID: web.Conversation.ID, Status: core.StatusResolved, At: at(time.Minute)})
	must(err)
	web2, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1", ReopenWithin: time.Hour, Message: core.Message{
		Kind: core.KindText, Text: "back", CreatedAt: at(48 * time.Hour)}})
	must(err)
	_, err = s.Assign(ctx, core.Assignment{ConversationID: web2.Conversation.ID, AgentID: bob.ID, At: at(49 * time.Hour)})
	must(err)
	bob.Active = false // deactivated since, and still the assignee
	must(storetest.UpdateAgent(s, bob))

	// Agent notifications in the outbox, one retried.
	e, err := s.Enqueue(ctx, core.OutboxEntry{Channel: "wecom", Key: "alice", Payload: []byte(`{"n":1}`), CreatedAt: t0})
	must(err)
	must(s.RetryOutbox(ctx, e.ID, at(time.Hour), "429 retry_after 3600"))
	_, err = s.Enqueue(ctx, core.OutboxEntry{Channel: "slack", Key: "T1", Payload: []byte("x"), CreatedAt: at(time.Second)})
	must(err)
}

// snapshot is everything a store shows through its API.
type snapshot struct {
	Agents        []core.Agent
	Sessions      []core.Session
	Settings      []string
	Conversations []core.Conversation
	Messages      map[int64][]core.Message
	Feed          []core.Message
	Contacts      []core.Contact
	Outbox        []core.OutboxEntry
	Queue         []core.Conversation
	OpenCounts    map[int64]int
	LastMessages  map[int64]core.Message
	Devices       [][]core.Device
}

func takeSnapshot(t *testing.T, s core.Store) snapshot {
	t.Helper()
	ctx := context.Background()
	var sn snapshot
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	sn.Agents, err = s.Agents(ctx)
	must(err)
	for _, h := range []string{"hash-a", "hash-b"} {
		ss, err := s.Session(ctx, h)
		must(err)
		sn.Sessions = append(sn.Sessions, ss)
	}
	for _, k := range []string{"web.secret", "slack.cursor"} {
		v, err := s.Setting(ctx, k)
		must(err)
		sn.Settings = append(sn.Settings, v)
	}
	sn.Conversations, err = s.Conversations(ctx, core.ConversationFilter{Limit: 500})
	must(err)
	for _, o := range []core.DeviceOwner{core.AgentDevices(1), core.IdentityDevices("web", "u:42")} {
		ds, err := s.Devices(ctx, o)
		must(err)
		sn.Devices = append(sn.Devices, ds)
	}
	sn.Messages = map[int64][]core.Message{}
	var convIDs, contactIDs []int64
	for _, c := range sn.Conversations {
		sn.Messages[c.ID], err = s.Messages(ctx, core.MessageQuery{ConversationID: c.ID, Limit: 1000})
		must(err)
		convIDs, contactIDs = append(convIDs, c.ID), append(contactIDs, c.ContactID)
	}
	sn.Feed, err = s.Feed(ctx, 0, 1000)
	must(err)
	sn.Contacts, err = s.Contacts(ctx, contactIDs)
	must(err)
	slices.SortFunc(sn.Contacts, func(a, b core.Contact) int { return int(a.ID - b.ID) })
	sn.Outbox, err = s.Outbox(ctx, "", time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), 1000)
	must(err)
	sn.Queue, err = s.Queue(ctx, 100)
	must(err)
	sn.OpenCounts, err = s.OpenCounts(ctx)
	must(err)
	sn.LastMessages, err = s.LastMessages(ctx, convIDs)
	must(err)
	return sn
}

func TestImportSQLite(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	path := filepath.Join(t.TempDir(), "kefu.db")
	ls, err := sqlite.Open(ctx, sqlite.Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	fillSQLite(t, ls)
	want := takeSnapshot(t, ls)
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	if len(want.Feed) != 13 || len(want.Outbox) != 3 || len(want.Conversations) != 4 {
		t.Fatalf("fill: %d messages, %d outbox entries, %d conversations", len(want.Feed), len(want.Outbox),
			len(want.Conversations))
	}

	src, err := sql.Open("sqlite", path+"?_query_only=on")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	pg := open(t, dsn, postgres.Options{})
	counts, err := postgres.ImportSQLite(ctx, src, pg, postgres.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, c := range counts {
		got[c.Table] = c.Rows
	}
	wantCounts := map[string]int64{"contacts": 3, "identities": 3, "agents": 2, "conversations": 4,
		"messages": 13, "outbox": 3, "settings": 2, "sessions": 2, "devices": 2}
	if !reflect.DeepEqual(got, wantCounts) {
		t.Errorf("counts = %v, want %v", got, wantCounts)
	}

	// Everything reads back the same through the PostgreSQL store.
	have := takeSnapshot(t, pg)
	hv, wv := reflect.ValueOf(have), reflect.ValueOf(want)
	for i := range hv.NumField() {
		if !reflect.DeepEqual(hv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s:\n got  %+v\n want %+v", hv.Type().Field(i).Name, hv.Field(i).Interface(),
				wv.Field(i).Interface())
		}
	}

	// Writes continue every sequence.
	maxID := want.Feed[len(want.Feed)-1].ID
	open := want.Conversations[0] // web2, the newest
	ap, err := pg.Append(ctx, core.Append{ConversationID: open.ID, Deliver: true, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: 2, Text: "after the move"}})
	if err != nil || ap.Message.Seq != open.LastSeq+1 || ap.Message.ID != maxID+1 || ap.Outbox.ID <= want.Outbox[2].ID {
		t.Errorf("append after import = %+v (outbox %+v), %v", ap.Message, ap.Outbox, err)
	}
	in, err := pg.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "new", Message: core.Message{Text: "hi"}})
	if err != nil || in.Conversation.ID != open.ID+1 || in.Contact.ID != 4 || in.Message.ID != maxID+2 {
		t.Errorf("ingest after import = %+v, %v", in, err)
	}
	a, err := pg.CreateAgent(ctx, core.Agent{Email: "carol@example.com"})
	if err != nil || a.ID != 3 {
		t.Errorf("agent after import = %+v, %v", a, err)
	}
	if _, err := pg.CreateAgent(ctx, core.Agent{Email: "ALICE@example.com"}); !errors.Is(err, core.ErrConflict) {
		t.Errorf("an imported email is taken: %v", err)
	}
	dup, err := pg.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: "8613800000000",
		Message: core.Message{Text: "hello", DedupKey: "p:wa:m1"}})
	if err != nil || !dup.Duplicate || dup.Message.ID != want.Feed[0].ID {
		t.Errorf("an imported dedup key: %+v, %v", dup, err)
	}
	// The moved Telegram chat continues its conversation.
	tg, err := pg.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "-100100", Message: core.Message{Text: "again"}})
	if err != nil || tg.NewConversation || tg.NewContact || tg.Message.Seq != 2 {
		t.Errorf("telegram after import = %+v, %v", tg, err)
	}

	// A target that holds data is refused, unless forced (which replaces it).
	_, err = postgres.ImportSQLite(ctx, src, pg, postgres.ImportOptions{})
	if !errors.Is(err, core.ErrConflict) {
		t.Fatalf("import into a non-empty target: %v, want ErrConflict", err)
	}
	if _, err := postgres.ImportSQLite(ctx, src, pg, postgres.ImportOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	have = takeSnapshot(t, pg)
	if !reflect.DeepEqual(have.Feed, want.Feed) || !reflect.DeepEqual(have.Agents, want.Agents) {
		t.Errorf("after a forced import: %d messages, %d agents", len(have.Feed), len(have.Agents))
	}
	if ap, err := pg.Append(ctx, core.Append{ConversationID: open.ID, Message: core.Message{
		SenderKind: core.SenderAgent, SenderID: 2, Text: "again"}}); err != nil || ap.Message.ID != maxID+1 {
		t.Errorf("append after a forced import = %+v, %v", ap.Message, err)
	}
}

func TestImportRefusesOtherSchemaVersions(t *testing.T) {
	ctx := context.Background()
	pg := open(t, freshSchema(t), postgres.Options{})
	src, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "empty.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	if _, err := postgres.ImportSQLite(ctx, src, pg, postgres.ImportOptions{}); err == nil {
		t.Error("imported a database that is not kefu's")
	}
	if _, err := src.ExecContext(ctx, `CREATE TABLE goose_db_version (version_id INTEGER, is_applied INTEGER);
		INSERT INTO goose_db_version VALUES (0, 1), (1, 1), (2, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.ImportSQLite(ctx, src, pg, postgres.ImportOptions{}); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("imported an older schema: %v", err)
	}
}
