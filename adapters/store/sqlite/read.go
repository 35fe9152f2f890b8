package sqlite

import (
	"context"
	"database/sql"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Reads run on the read-only pool. Each is one statement, so it sees every
// write committed before it started.

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

func (s *Store) row(ctx context.Context, st rstmt, args ...any) *sql.Row {
	return s.rst[st].QueryRowContext(ctx, args...)
}

// list runs a read statement and scans every row.
func list[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), what string, st *sql.Stmt,
	args ...any) ([]T, error) {
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, s.readErr(err, "%s", what)
	}
	defer func() { _ = rows.Close() }()
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
func one[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), st rstmt, what string,
	args ...any) (T, error) {
	if s.isClosed.Load() {
		var zero T
		return zero, core.ErrClosed
	}
	v, err := scan(s.row(ctx, st, args...))
	return v, s.readErr(err, "%s", what)
}

// Conversation implements core.Store.
func (s *Store) Conversation(ctx context.Context, id int64) (core.Conversation, error) {
	return one(ctx, s, scanConv, rsConv, "conversation", id)
}

// Contact implements core.Store.
func (s *Store) Contact(ctx context.Context, id int64) (core.Contact, error) {
	return one(ctx, s, scanContact, rsContact, "contact", id)
}

// Message implements core.Store.
func (s *Store) Message(ctx context.Context, id int64) (core.Message, error) {
	return one(ctx, s, scanMsg, rsMsg, "message", id)
}

// MessageByDedup implements core.Store.
func (s *Store) MessageByDedup(ctx context.Context, key string) (core.Message, error) {
	return one(ctx, s, scanMsg, rsMsgByDedup, "message by dedup key", key)
}

// MessageByExternalID implements core.Store.
func (s *Store) MessageByExternalID(ctx context.Context, channel, externalID string) (core.Message, error) {
	if externalID == "" {
		return core.Message{}, invalid("empty external id")
	}
	return one(ctx, s, scanMsg, rsMsgByExternal, "message by external id", externalID, channel)
}

// Conversations implements core.Store: newest (highest ID) first; Limit
// defaults to 50 and is at most 500.
func (s *Store) Conversations(ctx context.Context, f core.ConversationFilter) ([]core.Conversation, error) {
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	if f.Channel != "" && f.ExternalID != "" && !s.idents.mayHave(f.Channel, f.ExternalID) {
		s.identSkips.Add(1)
		return nil, nil // the identity has no conversation: see identFilter
	}
	var where []string
	var args []any
	if len(f.Statuses) > 0 {
		where = append(where, "c.status IN (?"+strings.Repeat(", ?", len(f.Statuses)-1)+")")
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if f.AssigneeID != 0 {
		add("c.assignee_id = ?", f.AssigneeID)
	}
	if f.Unassigned {
		where = append(where, "c.assignee_id IS NULL")
	}
	if f.ContactID != 0 {
		add("c.contact_id = ?", f.ContactID)
	}
	if f.Channel != "" {
		add("c.channel = ?", f.Channel)
	}
	if f.ExternalID != "" {
		add("c.external_id = ?", f.ExternalID)
	}
	if f.BeforeID > 0 {
		add("c.id < ?", f.BeforeID)
	}
	q := "SELECT " + convCols + " FROM conversations c"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY c.id DESC LIMIT ?"
	args = append(args, limit(f.Limit, 50, 500))

	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, s.readErr(err, "conversations")
	}
	defer func() { _ = rows.Close() }()
	var out []core.Conversation
	for rows.Next() {
		c, err := scanConv(rows)
		if err != nil {
			return nil, s.readErr(err, "conversations")
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(err, "conversations")
	}
	return out, nil
}

// Messages implements core.Store. Limit defaults to 100 and is at most 1000.
// With both AfterSeq and BeforeSeq set it returns the newest messages
// between them. A missing conversation is core.ErrNotFound.
func (s *Store) Messages(ctx context.Context, q core.MessageQuery) ([]core.Message, error) {
	n := limit(q.Limit, 100, 1000)
	public := 0
	if q.PublicOnly {
		public = 1
	}
	var ms []core.Message
	var err error
	if q.BeforeSeq > 0 {
		ms, err = list(ctx, s, scanMsg, "messages", s.rst[rsMsgsBefore], q.ConversationID, q.AfterSeq, q.BeforeSeq,
			public, n)
		slices.Reverse(ms)
	} else {
		ms, err = list(ctx, s, scanMsg, "messages", s.rst[rsMsgsAfter], q.ConversationID, q.AfterSeq,
			int64(math.MaxInt64), public, n)
	}
	if err != nil || len(ms) > 0 {
		return ms, err
	}
	var one int
	if err := s.row(ctx, rsConvExists, q.ConversationID).Scan(&one); err != nil {
		return nil, s.readErr(err, "conversation %d", q.ConversationID)
	}
	return ms, nil
}

// Feed implements core.Store. limit defaults to 100 and is at most 1000.
func (s *Store) Feed(ctx context.Context, afterID int64, n int) ([]core.Message, error) {
	return list(ctx, s, scanMsg, "feed", s.rst[rsFeed], afterID, limit(n, 100, 1000))
}

// Queue implements core.Store. limit defaults to 50 and is at most 500.
func (s *Store) Queue(ctx context.Context, n int) ([]core.Conversation, error) {
	return list(ctx, s, scanConv, "queue", s.rst[rsQueue], limit(n, 50, 500))
}

// QueuePosition implements core.Store.
func (s *Store) QueuePosition(ctx context.Context, id int64) (int, error) {
	return one(ctx, s, func(r scanner) (int, error) {
		var n int
		err := r.Scan(&n)
		return n, err
	}, rsQueuePosition, "queue position", id)
}

// OpenCounts implements core.Store.
func (s *Store) OpenCounts(ctx context.Context) (map[int64]int, error) {
	type count struct {
		agent int64
		n     int
	}
	scan := func(r scanner) (count, error) {
		var c count
		err := r.Scan(&c.agent, &c.n)
		return c, err
	}
	cs, err := list(ctx, s, scan, "open counts", s.rst[rsOpenCounts])
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
	return one(ctx, s, scanAgent, rsAgent, "agent", id)
}

// AgentByEmail implements core.Store; the email matches case-insensitively.
func (s *Store) AgentByEmail(ctx context.Context, email string) (core.Agent, error) {
	return one(ctx, s, scanAgent, rsAgentByEmail, "agent by email", emailKey(email))
}

// Agents implements core.Store.
func (s *Store) Agents(ctx context.Context) ([]core.Agent, error) {
	return list(ctx, s, scanAgent, "agents", s.rst[rsAgents])
}

// OutboxEntry implements core.Store.
func (s *Store) OutboxEntry(ctx context.Context, id int64) (core.OutboxEntry, error) {
	return one(ctx, s, scanOutbox, rsOutbox, "outbox entry", id)
}

// OutboxHead implements core.Store.
func (s *Store) OutboxHead(ctx context.Context, channel, key string) (core.OutboxEntry, error) {
	return one(ctx, s, scanOutbox, rsOutboxHead, "outbox head", channel, key)
}

// Outbox implements core.Store. limit defaults to 100 and is at most 1000.
func (s *Store) Outbox(ctx context.Context, channel string, now time.Time, n int) ([]core.OutboxEntry, error) {
	n = limit(n, 100, 1000)
	if channel == "" {
		return list(ctx, s, scanOutbox, "outbox", s.rst[rsOutboxDue], toDB(now), n)
	}
	return list(ctx, s, scanOutbox, "outbox", s.rst[rsOutboxDueChannel], channel, toDB(now), n)
}

// OutboxStats implements core.Store: oldest is the earliest CreatedAt, zero
// when the outbox is empty.
func (s *Store) OutboxStats(ctx context.Context) (int, time.Time, error) {
	if s.isClosed.Load() {
		return 0, time.Time{}, core.ErrClosed
	}
	var depth int
	var oldest int64
	if err := s.row(ctx, rsOutboxStats).Scan(&depth, &oldest); err != nil {
		return 0, time.Time{}, s.readErr(err, "outbox stats")
	}
	return depth, fromDB(oldest), nil
}
