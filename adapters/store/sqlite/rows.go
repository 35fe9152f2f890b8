package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/kefuhq/kefu/core"
)

// Times are stored as unix microseconds, 0 for the zero time.

func toDB(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromDB(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// norm is t as the store keeps it: UTC, whole microseconds.
func norm(t time.Time) time.Time { return fromDB(toDB(t)) }

// nowOr is t normalised, or the clock's now when t is zero.
func (s *Store) nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return norm(s.now())
	}
	return norm(t)
}

// nullStr and nullInt store absent values as NULL, which UNIQUE and FOREIGN
// KEY constraints ignore.
func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(i int64) any {
	if i == 0 {
		return nil
	}
	return i
}

type scanner interface{ Scan(dest ...any) error }

func scanConv(r scanner) (core.Conversation, error) {
	var c core.Conversation
	var inbound, queued, created, updated, resolved int64
	err := r.Scan(&c.ID, &c.ContactID, &c.Channel, &c.ExternalID, &c.Status, &c.AssigneeID,
		&c.LastSeq, &inbound, &queued, &created, &updated, &resolved)
	c.LastInboundAt, c.QueuedAt, c.CreatedAt = fromDB(inbound), fromDB(queued), fromDB(created)
	c.UpdatedAt, c.ResolvedAt = fromDB(updated), fromDB(resolved)
	return c, err
}

func scanMsg(r scanner) (core.Message, error) {
	var m core.Message
	var hasMedia, hasEvent bool
	var md core.Media
	var ev core.Event
	var created int64
	err := r.Scan(&m.ID, &m.ConversationID, &m.Seq, &m.SenderKind, &m.SenderID, &m.Visibility, &m.Kind, &m.Text,
		&hasMedia, &md.Key, &md.Name, &md.Type, &md.Size, &md.Preview,
		&hasEvent, &ev.Type, &ev.AgentID, &ev.FromID, &ev.ByID,
		&m.Status, &m.FailReason, &m.DedupKey, &m.ExternalID, &m.ResendOf, &created)
	if hasMedia {
		m.Media = &md
	}
	if hasEvent {
		m.Event = &ev
	}
	m.CreatedAt = fromDB(created)
	return m, err
}

func scanContact(r scanner) (core.Contact, error) {
	var c core.Contact
	var created int64
	err := r.Scan(&c.ID, &c.Name, &created)
	c.CreatedAt = fromDB(created)
	return c, err
}

func scanAgent(r scanner) (core.Agent, error) {
	var a core.Agent
	var created int64
	err := r.Scan(&a.ID, &a.Email, &a.Name, &a.Role, &a.PasswordHash, &a.Active, &a.WeComUserID, &a.SlackUser,
		&created)
	a.CreatedAt = fromDB(created)
	return a, err
}

func scanOutbox(r scanner) (core.OutboxEntry, error) {
	var e core.OutboxEntry
	var next, created int64
	err := r.Scan(&e.ID, &e.Channel, &e.Key, &e.MessageID, &e.Payload, &e.Attempts, &next, &e.LastError,
		&created)
	e.NextAttemptAt, e.CreatedAt = fromDB(next), fromDB(created)
	return e, err
}

// msgArgs are stMsgIns's parameters for m.
func msgArgs(m *core.Message) []any {
	var mk any
	var mn, mt, mp string
	var ms int64
	if m.Media != nil {
		mk, mn, mt, ms, mp = m.Media.Key, m.Media.Name, m.Media.Type, m.Media.Size, m.Media.Preview
	}
	var et any
	var ea, ef, eb int64
	if m.Event != nil {
		et, ea, ef, eb = string(m.Event.Type), m.Event.AgentID, m.Event.FromID, m.Event.ByID
	}
	return []any{m.ConversationID, m.Seq, string(m.SenderKind), m.SenderID, string(m.Visibility), string(m.Kind),
		m.Text, mk, mn, mt, ms, mp, et, ea, ef, eb, string(m.Status), m.FailReason, nullStr(m.DedupKey),
		nullStr(m.ExternalID), nullInt(m.ResendOf), toDB(m.CreatedAt)}
}

// dbErr turns a database error into the store's: missing rows are
// core.ErrNotFound, and constraint violations name the core error they mean
// (a taken unique key is a conflict, a missing referenced row is not found).
// what says what the caller was doing.
func dbErr(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	what = fmt.Sprintf(what, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: %s: %w", what, core.ErrNotFound)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("sqlite: %s: %w: %w", what, core.ErrConflict, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("sqlite: %s: %w: %w", what, core.ErrNotFound, err)
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return fmt.Errorf("sqlite: %s: %w: %w", what, core.ErrInvalid, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", what, err)
}

// readErr is dbErr for the read pool, which fails with database/sql's own
// error once Close has run.
func (s *Store) readErr(err error, what string, args ...any) error {
	if err != nil && s.isClosed.Load() {
		return core.ErrClosed
	}
	return dbErr(err, what, args...)
}
