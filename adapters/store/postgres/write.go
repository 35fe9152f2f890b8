package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kefuhq/kefu/core"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("postgres: %w: %s", core.ErrInvalid, fmt.Sprintf(format, args...))
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("postgres: %w: %s", core.ErrConflict, fmt.Sprintf(format, args...))
}

// checkMessage applies core.PrepareMessage and the store's clock to m.
func (s *Store) checkMessage(m *core.Message) error {
	if err := core.PrepareMessage(m); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	m.CreatedAt = s.nowOr(m.CreatedAt)
	return nil
}

// eventMessage fills the parts of a caller's event message it left out
// (core.FillEvent), dated at the time of the change.
func (s *Store) eventMessage(m core.Message, t core.EventType, at time.Time) (core.Message, error) {
	m = core.FillEvent(m, t)
	if m.CreatedAt.IsZero() {
		m.CreatedAt = at
	}
	return m, s.checkMessage(&m)
}

// Row helpers on the writer's transaction.

func (w *wtx) conv(id int64) (core.Conversation, error) {
	c, err := scanConv(w.queryRow(sqlConv, id))
	return c, dbErr(err, "conversation %d", id)
}

func (w *wtx) contact(id int64) (core.Contact, error) {
	c, err := scanContact(w.queryRow(sqlContact, id))
	return c, dbErr(err, "contact %d", id)
}

func (w *wtx) msg(id int64) (core.Message, error) {
	m, err := scanMsg(w.queryRow(sqlMsg, id))
	return m, dbErr(err, "message %d", id)
}

// byDedup finds the message stored under key, if any.
func (w *wtx) byDedup(key string) (core.Message, bool, error) {
	m, err := scanMsg(w.queryRow(sqlMsgByDedup, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	return m, err == nil, dbErr(err, "message by dedup key")
}

// withMsg runs a statement built by withMessage (or sqlAppend) for m, with
// the statement's own parameters after the message's. It fills m's IDs from
// the conversation it returns. dup reports a taken dedup key: then nothing
// is inserted, but the conversation statement has run; the caller undoes it.
// extra receives the statement's further result columns.
func (w *wtx) withMsg(q string, m *core.Message, args []any, extra ...any) (c core.Conversation, dup bool, err error) {
	var id int64
	c, err = scanConv(w.queryRow(q, append(msgArgs(m), args...)...), append([]any{&id}, extra...)...)
	if err != nil {
		return c, false, err
	}
	if id == 0 {
		return c, true, nil
	}
	m.ID, m.ConversationID, m.Seq = id, c.ID, c.LastSeq
	return c, false, nil
}

// insertMsg stores m as message seq of conversation conv. dup reports a
// taken dedup key (nothing inserted).
func (w *wtx) insertMsg(conv, seq int64, m *core.Message) (dup bool, err error) {
	var id int64
	err = w.queryRow(sqlMsgIns, append(msgArgs(m), conv, seq)...).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, dbErr(err, "insert message in conversation %d", conv)
	}
	m.ID, m.ConversationID, m.Seq = id, conv, seq
	return false, nil
}

// saveConv writes every mutable column of c.
func (w *wtx) saveConv(c *core.Conversation) error {
	_, err := w.exec(sqlConvSave, string(c.Status), nullInt(c.AssigneeID), c.LastSeq, ts(c.LastInboundAt),
		ts(c.QueuedAt), ts(c.UpdatedAt), ts(c.ResolvedAt), c.ID)
	return dbErr(err, "update conversation %d", c.ID)
}

// updateStatus applies u to its message if the status advances.
func (w *wtx) updateStatus(u core.StatusUpdate) (core.Message, bool, error) {
	m, err := scanMsg(w.queryRow(sqlMsgStatus, u.MessageID, string(u.Status), u.Reason, nullStr(u.ExternalID),
		advancesTo(u.Status)))
	if err == nil {
		return m, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return m, false, dbErr(err, "update message %d", u.MessageID)
	}
	// Not moved: missing, or the status would not advance.
	m, err = w.msg(u.MessageID)
	if err != nil || u.ExternalID == "" || m.ExternalID != "" {
		return m, false, err
	}
	// A receipt got ahead of the send's answer: the status stays, and the
	// provider's id is still kept.
	tag, err := w.exec(sqlMsgExternalID, m.ID, u.ExternalID)
	if err != nil {
		return m, false, dbErr(err, "update message %d", m.ID)
	}
	if tag.RowsAffected() == 0 {
		// Another node recorded an id first: that one stands.
		m, err = w.msg(u.MessageID)
		return m, false, err
	}
	m.ExternalID = u.ExternalID
	return m, false, nil
}

// changeFailed explains why a conditional update of conversation id wrote
// nothing: it is missing (ErrNotFound), or it is not in the state expected
// (ErrConflict).
func (w *wtx) changeFailed(id int64, why string) error {
	var status string
	var assignee int64
	if err := w.queryRow(sqlConvStatus, id).Scan(&status, &assignee); err != nil {
		return dbErr(err, "conversation %d", id)
	}
	return conflict("conversation %d is %s (assignee %d): %s", id, status, assignee, why)
}

// Ingest implements core.Store.
func (s *Store) Ingest(ctx context.Context, in core.Inbound) (core.Ingested, error) {
	if in.Channel == "" || in.ExternalID == "" {
		return core.Ingested{}, invalid("inbound message without channel or external id")
	}
	m := in.Message
	if m.Kind == core.KindEvent || m.Event != nil {
		return core.Ingested{}, invalid("a customer message cannot be an event")
	}
	m.SenderKind, m.Visibility, m.Status = core.SenderContact, core.Public, core.MsgSent
	m.FailReason, m.ResendOf = "", 0
	if err := s.checkMessage(&m); err != nil {
		return core.Ingested{}, err
	}
	var out core.Ingested
	err := s.do(ctx, func(w *wtx) error {
		var before core.Conversation
		if in.KeepsWindow {
			var err error
			if before, err = w.liveConv(in.Channel, in.ExternalID); err != nil {
				return err
			}
		}
		r, err := w.ingest(in, m)
		if err == nil && in.KeepsWindow && !r.Duplicate && before.ID != 0 && r.Conversation.ID == before.ID &&
			r.Conversation.LastInboundAt.After(before.LastInboundAt) {
			r.Conversation.LastInboundAt = before.LastInboundAt
			err = w.saveConv(&r.Conversation)
		}
		out = r
		return err
	})
	if err != nil {
		return core.Ingested{}, err
	}
	return out, nil
}

// liveConv is the identity's conversation that is not resolved; zero if
// it has none.
func (w *wtx) liveConv(channel, externalID string) (core.Conversation, error) {
	var contact, live int64
	var name string
	var created pgtype.Timestamptz
	err := w.queryRow(sqlIdentityLookup, channel, externalID).Scan(&contact, &name, &created, &live)
	switch {
	case errors.Is(err, pgx.ErrNoRows) || err == nil && live == 0:
		return core.Conversation{}, nil
	case err != nil:
		return core.Conversation{}, dbErr(err, "identity %s/%s", channel, externalID)
	}
	return w.conv(live)
}

func (w *wtx) ingest(in core.Inbound, m core.Message) (core.Ingested, error) {
	var r core.Ingested
	at := m.CreatedAt
	var contact core.Contact
	var live int64
	var created pgtype.Timestamptz
	err := w.queryRow(sqlIdentityLookup, in.Channel, in.ExternalID).Scan(&contact.ID, &contact.Name, &created, &live)
	contact.CreatedAt = fromTS(created)
	known := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return r, dbErr(err, "identity %s/%s", in.Channel, in.ExternalID)
	}

	// The common case: a known identity with a live conversation.
	if live != 0 {
		m.SenderID = contact.ID
		c, dup, err := w.withMsg(sqlAppend, &m, []any{live, false}, new(int64))
		switch {
		case errors.Is(err, pgx.ErrNoRows): // resolved meanwhile, by an earlier write of this batch
			return r, conflict("conversation %d changed under an ingest", live)
		case err != nil:
			return r, dbErr(err, "append to conversation %d", live)
		case dup:
			w.undo()
			d, _, err := w.byDedup(m.DedupKey)
			return w.duplicate(d, err)
		}
		r.Contact, r.Conversation, r.Message = contact, c, m
		return r, w.rename(&r.Contact, in.Name)
	}

	// Otherwise the message may still be a duplicate (from a conversation
	// resolved since), and something is created or reopened for it.
	if m.DedupKey != "" {
		if d, found, err := w.byDedup(m.DedupKey); err != nil || found {
			return w.duplicate(d, err)
		}
	}
	if known {
		r.Contact = contact
		if err := w.rename(&r.Contact, in.Name); err != nil {
			return r, err
		}
	} else {
		var id int64
		if err := w.queryRow(sqlContactIns, in.Name, ts(at), in.Channel, in.ExternalID).Scan(&id); err != nil {
			return r, dbErr(err, "insert contact %s/%s", in.Channel, in.ExternalID)
		}
		r.Contact = core.Contact{ID: id, Name: in.Name, CreatedAt: at}
		r.NewContact = true
	}
	m.SenderID = r.Contact.ID

	// The identity's resolved conversation reopened, or a new one.
	if known {
		c, err := scanConv(w.queryRow(sqlConvLatest, in.Channel, in.ExternalID))
		found := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return r, dbErr(err, "conversation of %s/%s", in.Channel, in.ExternalID)
		}
		if found && c.Status == core.StatusResolved && at.Sub(c.ResolvedAt) <= in.ReopenWithin {
			reopen(&c, at)
			ev := core.Message{SenderKind: core.SenderSystem, Visibility: core.Public, Kind: core.KindEvent,
				Event: &core.Event{Type: core.EventReopened}, Status: core.MsgSent, CreatedAt: at}
			if _, err := w.insertMsg(c.ID, c.LastSeq+1, &ev); err != nil {
				return r, err
			}
			if dup, err := w.insertMsg(c.ID, c.LastSeq+2, &m); err != nil || dup {
				return r, cmpErr(err, conflict("dedup key %q taken", m.DedupKey))
			}
			c.LastSeq += 2
			c.Received(at, true)
			if err := w.saveConv(&c); err != nil {
				return r, err
			}
			r.Conversation, r.Message, r.Events, r.Reopened = c, m, []core.Message{ev}, true
			return r, nil
		}
	}
	c, dup, err := w.withMsg(sqlNewConv, &m, []any{r.Contact.ID, in.Channel, in.ExternalID})
	if err != nil || dup {
		return r, cmpErr(dbErr(err, "new conversation for %s/%s", in.Channel, in.ExternalID),
			conflict("dedup key %q taken", m.DedupKey))
	}
	r.Conversation, r.Message, r.NewConversation = c, m, true
	return r, nil
}

// reopen makes a conversation live again: open with its assignee, else back
// in the queue (queued at, unless it was already waiting there).
func reopen(c *core.Conversation, at time.Time) {
	c.ResolvedAt = time.Time{}
	switch {
	case c.AssigneeID != 0:
		c.Status = core.StatusOpen
	case c.Status != core.StatusPending:
		c.Status = core.StatusPending
		c.QueuedAt = at
	}
	c.Received(at, false) // a late message must not take UpdatedAt back
}

// rename gives the contact the provider's name for them, when it is new.
func (w *wtx) rename(c *core.Contact, name string) error {
	if name == "" || name == c.Name {
		return nil
	}
	if _, err := w.exec(sqlContactName, name, c.ID); err != nil {
		return dbErr(err, "update contact %d", c.ID)
	}
	c.Name = name
	return nil
}

// duplicate is Ingest's answer for dup, a message already stored under the
// same dedup key (err: reading it failed).
func (w *wtx) duplicate(dup core.Message, err error) (core.Ingested, error) {
	r := core.Ingested{Duplicate: true, Message: dup}
	if err != nil {
		return r, err
	}
	if r.Conversation, err = w.conv(r.Message.ConversationID); err != nil {
		return r, err
	}
	r.Contact, err = w.contact(r.Conversation.ContactID)
	return r, err
}

// Append implements core.Store. A message from the contact also moves the
// conversation's LastInboundAt. A missing conversation is ErrNotFound even
// when the message's dedup key is stored.
func (s *Store) Append(ctx context.Context, a core.Append) (core.Appended, error) {
	m := a.Message
	if err := s.checkMessage(&m); err != nil {
		return core.Appended{}, err
	}
	var out core.Appended
	err := s.do(ctx, func(w *wtx) error {
		var r core.Appended
		var outboxID int64
		c, dup, err := w.withMsg(sqlAppend, &m, []any{a.ConversationID, a.Deliver}, &outboxID)
		if err != nil {
			return dbErr(err, "append to conversation %d", a.ConversationID)
		}
		if dup {
			w.undo()
			r.Duplicate = true
			if r.Message, _, err = w.byDedup(m.DedupKey); err != nil {
				return err
			}
			if r.Conversation, err = w.conv(r.Message.ConversationID); err != nil {
				return err
			}
			out = r
			return nil
		}
		if a.Deliver {
			r.Outbox = &core.OutboxEntry{ID: outboxID, Channel: c.Channel, Key: strconv.FormatInt(c.ID, 10),
				MessageID: m.ID, NextAttemptAt: m.CreatedAt, CreatedAt: m.CreatedAt}
		}
		r.Conversation, r.Message = c, m
		out = r
		return nil
	})
	if err != nil {
		return core.Appended{}, err
	}
	return out, nil
}

// Assign implements core.Store. When a.Event has no content, the event
// appended is {assigned|transferred|unassigned, AgentID, FromID} from kefu.
//
// The conversation changes only if its assignee is still a.From (a
// conditional UPDATE), so of two nodes racing to take it one wins. The
// capacity check counts the agent's open conversations under a lock on the
// agent's row, so max_open_per_agent holds across nodes. It runs before the
// event is inserted: a refusal after the insert would roll back an ID
// already drawn, and message IDs must stay dense (see msgNew).
func (s *Store) Assign(ctx context.Context, a core.Assignment) (core.Changed, error) {
	if a.AgentID < 0 || a.From < 0 {
		return core.Changed{}, invalid("agent id %d, from %d", a.AgentID, a.From)
	}
	at := s.nowOr(a.At)
	t := core.EventAssigned
	switch {
	case a.AgentID == 0:
		t = core.EventUnassigned
	case a.From != 0:
		t = core.EventTransferred
	}
	ev := a.Event
	if ev.Event == nil && ev.Kind == "" && ev.Text == "" && ev.Media == nil {
		ev.Event = &core.Event{Type: t, AgentID: a.AgentID, FromID: a.From}
	}
	ev, err := s.eventMessage(ev, t, at)
	if err != nil {
		return core.Changed{}, err
	}
	status := core.StatusOpen
	if a.AgentID == 0 {
		status = core.StatusPending
	}
	var out core.Changed
	err = s.do(ctx, func(w *wtx) error {
		if a.AgentID != 0 {
			lock := sqlAgentShare
			if a.MaxOpen > 0 {
				lock = sqlAgentLock
			}
			var active bool
			if err := w.queryRow(lock, a.AgentID).Scan(&active); err != nil {
				return dbErr(err, "agent %d", a.AgentID)
			}
			if !active {
				return fmt.Errorf("postgres: agent %d is deactivated: %w", a.AgentID, core.ErrForbidden)
			}
		}
		if a.AgentID != 0 && a.MaxOpen > 0 {
			// A statement of its own, after the lock: its snapshot sees
			// every assignment committed before the lock was granted.
			var n int
			if err := w.queryRow(sqlOpenCount, a.AgentID, a.ConversationID).Scan(&n); err != nil {
				return dbErr(err, "count open conversations")
			}
			if n >= a.MaxOpen {
				return fmt.Errorf("postgres: agent %d has %d open conversations: %w", a.AgentID, n, core.ErrCapacity)
			}
		}
		e := ev
		c, dup, err := w.withMsg(sqlAssign, &e, []any{a.ConversationID, nullInt(a.AgentID), string(status), ts(at),
			nullInt(a.From), a.KeepPlace})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return w.changeFailed(a.ConversationID, fmt.Sprintf("cannot assign it from %d", a.From))
		case err != nil: // a missing agent fails the foreign key: ErrNotFound
			return dbErr(err, "assign conversation %d to %d", a.ConversationID, a.AgentID)
		case dup:
			return conflict("event's dedup key %q taken", e.DedupKey)
		}
		out = core.Changed{Conversation: c, Event: e}
		return nil
	})
	if err != nil {
		return core.Changed{}, err
	}
	return out, nil
}

// AssignAll implements core.Store with one Assign after another, each its
// own write and commit. One write for them all would need a savepoint per
// assignment inside an op of the pipelined writer (writer.go); not done yet:
// the commit per conversation it saves matters most on SQLite's single
// writer.
func (s *Store) AssignAll(ctx context.Context, as []core.Assignment) ([]core.Changed, error) {
	out := make([]core.Changed, 0, len(as))
	for _, a := range as {
		ch, err := s.Assign(ctx, a)
		if err != nil {
			return out, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// SetStatus implements core.Store. Reopening clears ResolvedAt; it is
// ErrConflict when the identity already has another live conversation. When
// c.Event has no content, the event appended is {resolved|reopened} from kefu.
func (s *Store) SetStatus(ctx context.Context, c core.StatusChange) (core.Changed, error) {
	var t core.EventType
	q := sqlResolve
	switch c.Status {
	case core.StatusResolved:
		t = core.EventResolved
	case core.StatusOpen:
		t, q = core.EventReopened, sqlReopen
	default:
		return core.Changed{}, invalid("conversation status %q (want resolved or open)", c.Status)
	}
	if c.From != "" && !c.From.Valid() {
		return core.Changed{}, invalid("conversation status %q", c.From)
	}
	at := s.nowOr(c.At)
	ev, err := s.eventMessage(c.Event, t, at)
	if err != nil {
		return core.Changed{}, err
	}
	var out core.Changed
	err = s.do(ctx, func(w *wtx) error {
		e := ev
		conv, dup, err := w.withMsg(q, &e, []any{c.ConversationID, ts(at), string(c.From)})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return w.changeFailed(c.ConversationID, fmt.Sprintf("not %s", c.From))
		case err != nil: // reopening beside a live conversation: ErrConflict
			return dbErr(err, "set conversation %d %s", c.ConversationID, c.Status)
		case dup:
			return conflict("event's dedup key %q taken", e.DedupKey)
		}
		out = core.Changed{Conversation: conv, Event: e}
		return nil
	})
	if err != nil {
		return core.Changed{}, err
	}
	return out, nil
}

// UpdateStatus implements core.Store.
func (s *Store) UpdateStatus(ctx context.Context, u core.StatusUpdate) (core.Message, bool, error) {
	if !u.Status.Valid() {
		return core.Message{}, false, invalid("message status %q", u.Status)
	}
	var m core.Message
	var changed bool
	err := s.do(ctx, func(w *wtx) error {
		var err error
		m, changed, err = w.updateStatus(u)
		return err
	})
	if err != nil {
		return core.Message{}, false, err
	}
	return m, changed, nil
}

// MarkUpTo implements core.Store.
func (s *Store) MarkUpTo(ctx context.Context, r core.Receipt) (int, error) {
	var q string
	switch {
	case r.ByContact && r.Status == core.MsgDelivered:
		q = sqlMarkContactDelivered
	case r.ByContact && r.Status == core.MsgRead:
		q = sqlMarkContactRead
	case r.Status == core.MsgDelivered:
		q = sqlMarkAgentDelivered
	case r.Status == core.MsgRead:
		q = sqlMarkAgentRead
	default:
		return 0, invalid("receipt status %q (want delivered or read)", r.Status)
	}
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		var exists bool
		if err := w.queryRow(q, r.ConversationID, r.UpToSeq).Scan(&exists, &n); err != nil {
			return dbErr(err, "mark conversation %d", r.ConversationID)
		}
		if !exists {
			return fmt.Errorf("postgres: conversation %d: %w", r.ConversationID, core.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

func checkAgent(a *core.Agent) error {
	if a.Email == "" {
		return invalid("agent without email")
	}
	if a.Role == "" {
		a.Role = core.RoleAgent
	}
	if a.Role != core.RoleAgent && a.Role != core.RoleAdmin {
		return invalid("agent role %q", a.Role)
	}
	return nil
}

// CreateAgent implements core.Store. An empty Role is RoleAgent.
func (s *Store) CreateAgent(ctx context.Context, a core.Agent) (core.Agent, error) {
	if err := checkAgent(&a); err != nil {
		return core.Agent{}, err
	}
	a.CreatedAt = s.nowOr(a.CreatedAt)
	var id int64
	err := s.do(ctx, func(w *wtx) error {
		err := w.queryRow(sqlAgentIns, a.Email, a.Name, string(a.Role), a.PasswordHash, a.Active, a.WeComUserID,
			a.SlackUser, ts(a.CreatedAt)).Scan(&id)
		return dbErr(err, "create agent %s", a.Email)
	})
	if err != nil {
		return core.Agent{}, err
	}
	a.ID = id
	return a, nil
}

// UpdateAgent implements core.Store. CreatedAt is kept as stored.
func (s *Store) UpdateAgent(ctx context.Context, prev, a core.Agent) error {
	if err := checkAgent(&a); err != nil {
		return err
	}
	if prev.ID != a.ID {
		return invalid("update of agent %d from agent %d", a.ID, prev.ID)
	}
	return s.do(ctx, func(w *wtx) error {
		if a.Role != core.RoleAdmin || !a.Active { // it may be the last admin's demotion
			if _, err := w.exec(sqlAgentAdminsLock); err != nil {
				return dbErr(err, "lock the admins")
			}
		}
		cur, err := scanAgent(w.queryRow(sqlAgent+" FOR UPDATE", a.ID))
		if err != nil {
			return dbErr(err, "agent %d", a.ID)
		}
		if !cur.Same(prev) {
			return fmt.Errorf("postgres: agent %d: %w", a.ID, core.ErrStale)
		}
		tag, err := w.exec(sqlAgentUpd, a.Email, a.Name, string(a.Role), a.PasswordHash, a.Active, a.WeComUserID,
			a.SlackUser, a.ID)
		if err != nil {
			return dbErr(err, "update agent %d", a.ID)
		}
		if tag.RowsAffected() == 0 {
			var n int
			if err := w.queryRow(sqlAgentExists, a.ID).Scan(&n); err != nil {
				return dbErr(err, "agent %d", a.ID)
			}
			if n > 0 {
				return fmt.Errorf("postgres: %w: agent %d is the last active admin", core.ErrConflict, a.ID)
			}
			return fmt.Errorf("postgres: agent %d: %w", a.ID, core.ErrNotFound)
		}
		return nil
	})
}

// cmpErr is err, or alt when err is nil.
func cmpErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// Enqueue implements core.Store. CreatedAt defaults to now and
// NextAttemptAt to CreatedAt.
func (s *Store) Enqueue(ctx context.Context, e core.OutboxEntry) (core.OutboxEntry, error) {
	if e.Channel == "" {
		return core.OutboxEntry{}, invalid("outbox entry without channel")
	}
	e.CreatedAt = s.nowOr(e.CreatedAt)
	if e.NextAttemptAt.IsZero() {
		e.NextAttemptAt = e.CreatedAt
	}
	e.NextAttemptAt = norm(e.NextAttemptAt)
	var id int64
	err := s.do(ctx, func(w *wtx) error {
		err := w.queryRow(sqlOutboxIns, e.Channel, e.Key, nullInt(e.MessageID), e.Payload, e.Attempts,
			ts(e.NextAttemptAt), e.LastError, ts(e.CreatedAt)).Scan(&id)
		return dbErr(err, "insert outbox entry")
	})
	if err != nil {
		return core.OutboxEntry{}, err
	}
	e.ID = id
	return e, nil
}

// RetryOutbox implements core.Store. A zero next means now.
func (s *Store) RetryOutbox(ctx context.Context, id int64, next time.Time, lastErr string) error {
	next = s.nowOr(next)
	return s.do(ctx, func(w *wtx) error {
		tag, err := w.exec(sqlOutboxRetry, id, ts(next), lastErr)
		if err != nil {
			return dbErr(err, "retry outbox entry %d", id)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres: outbox entry %d: %w", id, core.ErrNotFound)
		}
		return nil
	})
}

// FinishOutbox implements core.Store. u.MessageID 0 means the entry's
// message. If applying u fails, the entry stays.
func (s *Store) FinishOutbox(ctx context.Context, id int64, u *core.StatusUpdate) error {
	if u != nil && !u.Status.Valid() {
		return invalid("message status %q", u.Status)
	}
	return s.do(ctx, func(w *wtx) error {
		var msgID int64
		if err := w.queryRow(sqlOutboxDel, id).Scan(&msgID); err != nil {
			return dbErr(err, "outbox entry %d", id)
		}
		if u == nil {
			return nil
		}
		uu := *u
		if uu.MessageID == 0 {
			uu.MessageID = msgID
		}
		if uu.MessageID == 0 {
			return invalid("status update for outbox entry %d, which has no message", id)
		}
		_, _, err := w.updateStatus(uu)
		return err
	})
}
