package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kefuhq/kefu/core"
)

// Reads run on the pool, beside the writer. Each is one statement, so it
// sees every write committed before it started; in particular Feed never
// returns a message whose ID is below one a committed write still to come
// will get (see the package doc).

// limit applies a list's default and maximum.
func limit(n, def, most int) int {
	switch {
	case n <= 0:
		return def
	case n > most:
		return most
	}
	return n
}

// list runs a read and scans every row.
func list[T any](ctx context.Context, s *Store, scan func(rowScanner) (T, error), what, q string,
	args ...any) ([]T, error) {
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.readErr(err, "%s", what)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.readErr(err, "%s", what)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(err, "%s", what)
	}
	return out, nil
}

// one reads a single row.
func one[T any](ctx context.Context, s *Store, scan func(rowScanner) (T, error), what, q string,
	args ...any) (T, error) {
	if s.isClosed.Load() {
		var zero T
		return zero, core.ErrClosed
	}
	v, err := scan(s.pool.QueryRow(ctx, q, args...))
	return v, s.readErr(err, "%s", what)
}

func convRow(r rowScanner) (core.Conversation, error) { return scanConv(r) }

// Conversation implements core.Store.
func (s *Store) Conversation(ctx context.Context, id int64) (core.Conversation, error) {
	return one(ctx, s, convRow, fmt.Sprintf("conversation %d", id), sqlConv, id)
}

// Contact implements core.Store.
func (s *Store) Contact(ctx context.Context, id int64) (core.Contact, error) {
	return one(ctx, s, scanContact, fmt.Sprintf("contact %d", id), sqlContact, id)
}

// Message implements core.Store.
func (s *Store) Message(ctx context.Context, id int64) (core.Message, error) {
	return one(ctx, s, scanMsg, fmt.Sprintf("message %d", id), sqlMsg, id)
}

// MessageByDedup implements core.Store.
func (s *Store) MessageByDedup(ctx context.Context, key string) (core.Message, error) {
	return one(ctx, s, scanMsg, "message by dedup key", sqlMsgByDedup, key)
}

// MessageByExternalID implements core.Store.
func (s *Store) MessageByExternalID(ctx context.Context, channel, externalID string) (core.Message, error) {
	if externalID == "" {
		return core.Message{}, invalid("empty external id")
	}
	return one(ctx, s, scanMsg, "message by external id", sqlMsgByExternal, externalID, channel)
}

// Conversations implements core.Store: newest (highest ID) first; Limit
// defaults to 50 and is at most 500.
func (s *Store) Conversations(ctx context.Context, f core.ConversationFilter) ([]core.Conversation, error) {
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if len(f.Statuses) > 0 {
		sts := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			sts[i] = string(st)
		}
		add("c.status = ANY($%d::text[])", sts)
	}
	if f.AssigneeID != 0 {
		add("c.assignee_id = $%d", f.AssigneeID)
	}
	if f.Unassigned {
		where = append(where, "c.assignee_id IS NULL")
	}
	if f.ContactID != 0 {
		add("c.contact_id = $%d", f.ContactID)
	}
	if f.Channel != "" {
		add("c.channel = $%d", f.Channel)
	}
	if f.ExternalID != "" {
		add("c.external_id = $%d", f.ExternalID)
	}
	if f.BeforeID > 0 {
		add("c.id < $%d", f.BeforeID)
	}
	q := "SELECT " + convCols + " FROM conversations c"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit(f.Limit, 50, 500))
	q += fmt.Sprintf(" ORDER BY c.id DESC LIMIT $%d", len(args))
	return list(ctx, s, convRow, "conversations", q, args...)
}

// Messages implements core.Store. Limit defaults to 100 and is at most 1000.
// With both AfterSeq and BeforeSeq set it returns the newest messages
// between them. A missing conversation is core.ErrNotFound.
func (s *Store) Messages(ctx context.Context, q core.MessageQuery) ([]core.Message, error) {
	n := limit(q.Limit, 100, 1000)
	var ms []core.Message
	var err error
	if q.BeforeSeq > 0 {
		ms, err = list(ctx, s, scanMsg, "messages", sqlMsgsBefore, q.ConversationID, q.AfterSeq, q.BeforeSeq,
			q.PublicOnly, n)
		slices.Reverse(ms)
	} else {
		ms, err = list(ctx, s, scanMsg, "messages", sqlMsgsAfter, q.ConversationID, q.AfterSeq, int64(0),
			q.PublicOnly, n)
	}
	if err != nil || len(ms) > 0 {
		return ms, err
	}
	var one int
	if err := s.pool.QueryRow(ctx, sqlConvExists, q.ConversationID).Scan(&one); err != nil {
		return nil, s.readErr(err, "conversation %d", q.ConversationID)
	}
	return ms, nil
}

// Feed implements core.Store. limit defaults to 100 and is at most 1000.
func (s *Store) Feed(ctx context.Context, afterID int64, n int) ([]core.Message, error) {
	return list(ctx, s, scanMsg, "feed", sqlFeed, afterID, limit(n, 100, 1000))
}

// Queue implements core.Store. limit defaults to 50 and is at most 500.
func (s *Store) Queue(ctx context.Context, n int) ([]core.Conversation, error) {
	return list(ctx, s, convRow, "queue", sqlQueue, limit(n, 50, 500))
}

// QueuePosition implements core.Store.
func (s *Store) QueuePosition(ctx context.Context, id int64) (int, error) {
	return one(ctx, s, func(r rowScanner) (int, error) {
		var n int
		err := r.Scan(&n)
		return n, err
	}, "queue position", sqlQueuePosition, id)
}

// OpenCounts implements core.Store.
func (s *Store) OpenCounts(ctx context.Context) (map[int64]int, error) {
	type count struct {
		agent int64
		n     int
	}
	scan := func(r rowScanner) (count, error) {
		var c count
		err := r.Scan(&c.agent, &c.n)
		return c, err
	}
	cs, err := list(ctx, s, scan, "open counts", sqlOpenCounts)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]int, len(cs))
	for _, c := range cs {
		out[c.agent] = c.n
	}
	return out, nil
}

// Agent implements core.Store.
func (s *Store) Agent(ctx context.Context, id int64) (core.Agent, error) {
	return one(ctx, s, scanAgent, fmt.Sprintf("agent %d", id), sqlAgent, id)
}

// AgentByEmail implements core.Store; the email matches case-insensitively.
// The email is folded by Go first, as core folds the emails it stores:
// PostgreSQL's lower() follows the database's LC_CTYPE, and folds ASCII
// only under C (initdb --no-locale, many managed services), so an agent
// typing "Élodie@…" would not find the "élodie@…" stored.
func (s *Store) AgentByEmail(ctx context.Context, email string) (core.Agent, error) {
	return one(ctx, s, scanAgent, "agent by email", sqlAgentByEmail, strings.ToLower(email))
}

// Agents implements core.Store.
func (s *Store) Agents(ctx context.Context) ([]core.Agent, error) {
	return list(ctx, s, scanAgent, "agents", sqlAgents)
}

// OutboxEntry implements core.Store.
func (s *Store) OutboxEntry(ctx context.Context, id int64) (core.OutboxEntry, error) {
	return one(ctx, s, scanOutbox, fmt.Sprintf("outbox entry %d", id), sqlOutbox, id)
}

// OutboxHead implements core.Store.
func (s *Store) OutboxHead(ctx context.Context, channel, key string) (core.OutboxEntry, error) {
	return one(ctx, s, scanOutbox, "outbox head", sqlOutboxHead, channel, key)
}

// Outbox implements core.Store. limit defaults to 100 and is at most 1000.
func (s *Store) Outbox(ctx context.Context, channel string, now time.Time, n int) ([]core.OutboxEntry, error) {
	n = limit(n, 100, 1000)
	if channel == "" {
		return list(ctx, s, scanOutbox, "outbox", sqlOutboxDue, ts(now), n)
	}
	return list(ctx, s, scanOutbox, "outbox", sqlOutboxDueChannel, channel, ts(now), n)
}

// OutboxStats implements core.Store: oldest is the earliest CreatedAt, zero
// when the outbox is empty.
func (s *Store) OutboxStats(ctx context.Context) (int, time.Time, error) {
	if s.isClosed.Load() {
		return 0, time.Time{}, core.ErrClosed
	}
	var depth int
	var oldest pgtype.Timestamptz
	if err := s.pool.QueryRow(ctx, sqlOutboxStats).Scan(&depth, &oldest); err != nil {
		return 0, time.Time{}, s.readErr(err, "outbox stats")
	}
	return depth, fromTS(oldest), nil
}

// Contacts implements core.Store.
func (s *Store) Contacts(ctx context.Context, ids []int64) ([]core.Contact, error) {
	if len(ids) > core.MaxBatchRead {
		return nil, invalid("%d ids in one read (at most %d)", len(ids), core.MaxBatchRead)
	}
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return list(ctx, s, scanContact, "contacts", sqlContacts, ids)
}

// LastMessages implements core.Store.
func (s *Store) LastMessages(ctx context.Context, convIDs []int64) (map[int64]core.Message, error) {
	if len(convIDs) > core.MaxBatchRead {
		return nil, invalid("%d ids in one read (at most %d)", len(convIDs), core.MaxBatchRead)
	}
	out := make(map[int64]core.Message, len(convIDs))
	if len(convIDs) == 0 {
		return out, nil
	}
	ms, err := list(ctx, s, scanMsg, "last messages", sqlLastMessages, convIDs)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		out[m.ConversationID] = m
	}
	return out, nil
}
