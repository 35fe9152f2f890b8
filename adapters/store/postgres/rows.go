package postgres

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kefuhq/kefu/core"
)

// Times are timestamptz, NULL for the zero time. The store keeps whole
// microseconds in UTC, as PostgreSQL does.

// ts is t as a parameter: NULL when zero.
func ts(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// fromTS is a scanned time: zero for NULL.
func fromTS(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// norm is t as the store keeps it: UTC, whole microseconds.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

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

func scanConv(r rowScanner, extra ...any) (core.Conversation, error) {
	var c core.Conversation
	var status string
	var inbound, queued, created, updated, resolved pgtype.Timestamptz
	dest := append([]any{&c.ID, &c.ContactID, &c.Channel, &c.ExternalID, &status, &c.AssigneeID,
		&c.LastSeq, &inbound, &queued, &created, &updated, &resolved}, extra...)
	err := r.Scan(dest...)
	c.Status = core.ConversationStatus(status)
	c.LastInboundAt, c.QueuedAt, c.CreatedAt = fromTS(inbound), fromTS(queued), fromTS(created)
	c.UpdatedAt, c.ResolvedAt = fromTS(updated), fromTS(resolved)
	return c, err
}

func scanMsg(r rowScanner) (core.Message, error) {
	var m core.Message
	var hasMedia, hasEvent bool
	var md core.Media
	var ev core.Event
	var sender, vis, kind, evType, status string
	var created pgtype.Timestamptz
	err := r.Scan(&m.ID, &m.ConversationID, &m.Seq, &sender, &m.SenderID, &vis, &kind, &m.Text,
		&hasMedia, &md.Key, &md.Name, &md.Type, &md.Size, &md.Preview,
		&hasEvent, &evType, &ev.AgentID, &ev.FromID, &ev.ByID,
		&status, &m.FailReason, &m.DedupKey, &m.ExternalID, &m.ResendOf, &created)
	m.SenderKind, m.Visibility, m.Kind, m.Status = core.SenderKind(sender), core.Visibility(vis),
		core.ContentKind(kind), core.MessageStatus(status)
	if hasMedia {
		m.Media = &md
	}
	if hasEvent {
		ev.Type = core.EventType(evType)
		m.Event = &ev
	}
	m.CreatedAt = fromTS(created)
	return m, err
}

func scanContact(r rowScanner) (core.Contact, error) {
	var c core.Contact
	var created pgtype.Timestamptz
	err := r.Scan(&c.ID, &c.Name, &created)
	c.CreatedAt = fromTS(created)
	return c, err
}

func scanAgent(r rowScanner) (core.Agent, error) {
	var a core.Agent
	var role string
	var created pgtype.Timestamptz
	err := r.Scan(&a.ID, &a.Email, &a.Name, &role, &a.PasswordHash, &a.Active, &a.WeComUserID, &a.SlackUser,
		&created)
	a.Role = core.Role(role)
	a.CreatedAt = fromTS(created)
	return a, err
}

func scanOutbox(r rowScanner) (core.OutboxEntry, error) {
	var e core.OutboxEntry
	var next, created pgtype.Timestamptz
	err := r.Scan(&e.ID, &e.Channel, &e.Key, &e.MessageID, &e.Payload, &e.Attempts, &next, &e.LastError,
		&created)
	e.NextAttemptAt, e.CreatedAt = fromTS(next), fromTS(created)
	return e, err
}

// msgArgs are the parameters of a message's columns, in msgInsCols order.
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
	return []any{string(m.SenderKind), m.SenderID, string(m.Visibility), string(m.Kind),
		m.Text, mk, mn, mt, ms, mp, et, ea, ef, eb, string(m.Status), m.FailReason, nullStr(m.DedupKey),
		nullStr(m.ExternalID), nullInt(m.ResendOf), ts(m.CreatedAt)}
}

// PostgreSQL error codes the store maps to core's errors.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
	pgCheckViolation      = "23514"
	pgNotNullViolation    = "23502"
	pgInvalidText         = "22P02"
)

// dbErr turns a database error into the store's: missing rows are
// core.ErrNotFound, and constraint violations name the core error they mean
// (a taken unique key is a conflict, a missing referenced row is not found).
// what says what the caller was doing.
func dbErr(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	what = fmt.Sprintf(what, args...)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", what, core.ErrNotFound)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case pgUniqueViolation:
			return fmt.Errorf("postgres: %s: %w: %w", what, core.ErrConflict, err)
		case pgForeignKeyViolation:
			return fmt.Errorf("postgres: %s: %w: %w", what, core.ErrNotFound, err)
		case pgCheckViolation, pgNotNullViolation, pgInvalidText:
			return fmt.Errorf("postgres: %s: %w: %w", what, core.ErrInvalid, err)
		}
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

// readErr is dbErr for reads, which fail with the pool's own error once
// Close has run.
func (s *Store) readErr(err error, what string, args ...any) error {
	if err != nil && s.isClosed.Load() {
		return core.ErrClosed
	}
	return dbErr(err, what, args...)
}

// fromMicros is a time stored as unix microseconds, 0 for none (SQLite's
// representation, read by ImportSQLite).
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
