package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("sqlite: %w: %s", core.ErrInvalid, fmt.Sprintf(format, args...))
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("sqlite: %w: %s", core.ErrConflict, fmt.Sprintf(format, args...))
}

// checkMessage applies core.PrepareMessage and the store's clock to m.
func (s *Store) checkMessage(m *core.Message) error {
	if err := core.PrepareMessage(m); err != nil {
		return fmt.Errorf("sqlite: %w", err)
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

// conv reads a conversation, from the cache when it holds it.
func (w *wtx) conv(id int64) (core.Conversation, error) {
	if c, ok := w.s.cache.get(id); ok {
		return c, nil
	}
	c, err := scanConv(w.queryRow(stConv, id))
	if err != nil {
		return c, dbErr(err, "conversation %d", id)
	}
	w.s.cache.put(c)
	return c, nil
}

func (w *wtx) contact(id int64) (core.Contact, error) {
	c, err := scanContact(w.queryRow(stContact, id))
	return c, dbErr(err, "contact %d", id)
}

func (w *wtx) msg(id int64) (core.Message, error) {
	m, err := scanMsg(w.queryRow(stMsg, id))
	return m, dbErr(err, "message %d", id)
}

// byDedup finds the message stored under key, if any.
func (w *wtx) byDedup(key string) (core.Message, bool, error) {
	m, err := scanMsg(w.queryRow(stMsgByDedup, key))
	if errors.Is(err, sql.ErrNoRows) {
		return m, false, nil
	}
	return m, err == nil, dbErr(err, "message by dedup key")
}

func (w *wtx) insertConv(c *core.Conversation) error {
	w.s.idents.add(c.Channel, c.ExternalID) // before the commit: see identFilter
	res, err := w.exec(stConvIns, c.ContactID, c.Channel, c.ExternalID, string(c.Status), nullInt(c.AssigneeID),
		c.LastSeq, toDB(c.LastInboundAt), toDB(c.QueuedAt), toDB(c.CreatedAt), toDB(c.UpdatedAt),
		toDB(c.ResolvedAt))
	if err != nil {
		return dbErr(err, "insert conversation")
	}
	if c.ID, err = res.LastInsertId(); err != nil {
		return dbErr(err, "insert conversation")
	}
	w.s.cache.put(*c)
	return nil
}

// saveConv writes every mutable column of c.
func (w *wtx) saveConv(c *core.Conversation) error {
	_, err := w.exec(stConvSave, string(c.Status), nullInt(c.AssigneeID), c.LastSeq, toDB(c.LastInboundAt),
		toDB(c.QueuedAt), toDB(c.UpdatedAt), toDB(c.ResolvedAt), c.ID)
	if err != nil {
		return dbErr(err, "update conversation %d", c.ID)
	}
	w.s.cache.put(*c)
	return nil
}

// errDuplicate: insertMsg found the message's dedup key taken.
var errDuplicate = errors.New("sqlite: duplicate dedup key")

// insertMsg stores m as c's next message and moves c's LastSeq; the caller
// saves c afterwards. A taken dedup key inserts nothing: errDuplicate.
func (w *wtx) insertMsg(c *core.Conversation, m *core.Message) error {
	m.ConversationID = c.ID
	m.Seq = c.LastSeq + 1
	res, err := w.exec(stMsgIns, msgArgs(m)...)
	if err != nil {
		return dbErr(err, "insert message in conversation %d", c.ID)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return dbErr(err, "insert message")
	}
	if n == 0 {
		return errDuplicate
	}
	if m.ID, err = res.LastInsertId(); err != nil {
		return dbErr(err, "insert message")
	}
	c.LastSeq = m.Seq
	return nil
}

// appendMsg is insertMsg followed by the cheap update of the conversation
// row that every message needs: LastSeq, UpdatedAt and, for the contact's
// messages, LastInboundAt.
func (w *wtx) appendMsg(c *core.Conversation, m *core.Message) error {
	if err := w.insertMsg(c, m); err != nil {
		return err
	}
	c.Received(m.CreatedAt, m.SenderKind == core.SenderContact)
	return w.bump(c)
}

// bump saves c's LastSeq, UpdatedAt and LastInboundAt.
func (w *wtx) bump(c *core.Conversation) error {
	if _, err := w.exec(stConvBump, c.LastSeq, toDB(c.UpdatedAt), toDB(c.LastInboundAt), c.ID); err != nil {
		return dbErr(err, "update conversation %d", c.ID)
	}
	w.s.cache.put(*c)
	return nil
}

func (w *wtx) insertOutbox(e *core.OutboxEntry) error {
	res, err := w.exec(stOutboxIns, e.Channel, e.Key, nullInt(e.MessageID), e.Payload, e.Attempts,
		toDB(e.NextAttemptAt), e.LastError, toDB(e.CreatedAt))
	if err != nil {
		return dbErr(err, "insert outbox entry")
	}
	e.ID, err = res.LastInsertId()
	return dbErr(err, "insert outbox entry")
}

// updateStatus applies u to its message if the status advances.
func (w *wtx) updateStatus(u core.StatusUpdate) (core.Message, bool, error) {
	m, err := w.msg(u.MessageID)
	if err != nil {
		return m, false, err
	}
	if !m.Status.Advances(u.Status) {
		if u.ExternalID == "" || m.ExternalID != "" {
			return m, false, nil
		}
		// A receipt got ahead of the send's answer: the status stays, and
		// the provider's id is still kept.
		m.ExternalID = u.ExternalID
		_, err = w.exec(stMsgStatus, string(m.Status), m.FailReason, nullStr(m.ExternalID), m.ID)
		return m, false, dbErr(err, "update message %d", m.ID)
	}
	m.Status = u.Status
	if u.Status == core.MsgFailed {
		m.FailReason = u.Reason
	}
	if u.ExternalID != "" {
		m.ExternalID = u.ExternalID
	}
	_, err = w.exec(stMsgStatus, string(m.Status), m.FailReason, nullStr(m.ExternalID), m.ID)
	return m, err == nil, dbErr(err, "update message %d", m.ID)
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
			err = w.bump(&r.Conversation)
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
	var contact, created, live int64
	var name string
	err := w.queryRow(stIdentityLookup, channel, externalID).Scan(&contact, &name, &created, &live)
	switch {
	case errors.Is(err, sql.ErrNoRows) || err == nil && live == 0:
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
	var created, live int64
	err := w.queryRow(stIdentityLookup, in.Channel, in.ExternalID).Scan(&contact.ID, &contact.Name, &created, &live)
	contact.CreatedAt = fromDB(created)
	known := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return r, dbErr(err, "identity %s/%s", in.Channel, in.ExternalID)
	}

	// The common case: a known identity with a live conversation.
	if live != 0 {
		c, err := w.conv(live)
		if err != nil {
			return r, err
		}
		m.SenderID = contact.ID
		switch err := w.appendMsg(&c, &m); {
		case errors.Is(err, errDuplicate):
			dup, _, err := w.byDedup(m.DedupKey)
			return w.duplicate(dup, err)
		case err != nil:
			return r, err
		}
		r.Contact, r.Conversation, r.Message = contact, c, m
		return r, w.rename(&r.Contact, in.Name)
	}

	// Otherwise the message may still be a duplicate (from a conversation
	// resolved since), and something is created or reopened for it.
	if m.DedupKey != "" {
		if dup, found, err := w.byDedup(m.DedupKey); err != nil || found {
			return w.duplicate(dup, err)
		}
	}
	if known {
		r.Contact = contact
		if err := w.rename(&r.Contact, in.Name); err != nil {
			return r, err
		}
	} else {
		res, err := w.exec(stContactIns, in.Name, toDB(at))
		if err != nil {
			return r, dbErr(err, "insert contact")
		}
		id, err := res.LastInsertId()
		if err != nil {
			return r, dbErr(err, "insert contact")
		}
		if _, err := w.exec(stIdentityIns, in.Channel, in.ExternalID, id); err != nil {
			return r, dbErr(err, "insert identity")
		}
		r.Contact = core.Contact{ID: id, Name: in.Name, CreatedAt: at}
		r.NewContact = true
	}

	// The identity's resolved conversation reopened, or a new one. An
	// identity created just now has no conversation (each one references
	// its identity).
	var c core.Conversation
	found := false
	if known {
		var err error
		c, err = scanConv(w.queryRow(stConvLatest, in.Channel, in.ExternalID))
		found = err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return r, dbErr(err, "conversation of %s/%s", in.Channel, in.ExternalID)
		}
	}
	if found && c.Status == core.StatusResolved && at.Sub(c.ResolvedAt) <= in.ReopenWithin {
		reopen(&c, at)
		ev := core.Message{SenderKind: core.SenderSystem, Visibility: core.Public, Kind: core.KindEvent,
			Event: &core.Event{Type: core.EventReopened}, Status: core.MsgSent, CreatedAt: at}
		if err := w.insertMsg(&c, &ev); err != nil {
			return r, err
		}
		r.Events, r.Reopened = []core.Message{ev}, true
	} else {
		c = core.Conversation{ContactID: r.Contact.ID, Channel: in.Channel, ExternalID: in.ExternalID,
			Status: core.StatusPending, QueuedAt: at, CreatedAt: at, UpdatedAt: at}
		if err := w.insertConv(&c); err != nil {
			return r, err
		}
		r.NewConversation = true
	}
	m.SenderID = r.Contact.ID
	if r.NewConversation {
		// Only the columns a message moves differ from the row just
		// inserted.
		if err := w.appendMsg(&c, &m); err != nil {
			return r, err
		}
	} else {
		if err := w.insertMsg(&c, &m); err != nil {
			return r, err
		}
		c.Received(at, true)
		if err := w.saveConv(&c); err != nil {
			return r, err
		}
	}
	r.Conversation, r.Message = c, m
	return r, nil
}

// rename gives the contact the provider's name for them, when it is new.
func (w *wtx) rename(c *core.Contact, name string) error {
	if name == "" || name == c.Name {
		return nil
	}
	if _, err := w.exec(stContactName, name, c.ID); err != nil {
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
		c, err := w.conv(a.ConversationID)
		if err != nil {
			return err
		}
		switch err := w.appendMsg(&c, &m); {
		case errors.Is(err, errDuplicate):
			r.Duplicate = true
			if r.Message, _, err = w.byDedup(m.DedupKey); err != nil {
				return err
			}
			if r.Conversation, err = w.conv(r.Message.ConversationID); err != nil {
				return err
			}
			out = r
			return nil
		case err != nil:
			return err
		}
		if a.Deliver {
			e := core.OutboxEntry{Channel: c.Channel, Key: strconv.FormatInt(c.ID, 10), MessageID: m.ID,
				NextAttemptAt: m.CreatedAt, CreatedAt: m.CreatedAt}
			if err := w.insertOutbox(&e); err != nil {
				return err
			}
			r.Outbox = &e
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
func (s *Store) Assign(ctx context.Context, a core.Assignment) (core.Changed, error) {
	out, err := s.AssignAll(ctx, []core.Assignment{a})
	if err != nil {
		return core.Changed{}, err
	}
	return out[0], nil
}

// AssignAll implements core.Store. The assignments are one write, so they
// commit together; each after the first runs under a savepoint of its own,
// so that the one that fails is rolled back alone and those before it stay.
func (s *Store) AssignAll(ctx context.Context, as []core.Assignment) ([]core.Changed, error) {
	as = slices.Clone(as)
	evs := make([]core.Message, 0, len(as))
	var invalidErr error // of as[len(evs)], which is not tried
	for i, a := range as {
		as[i].At = s.nowOr(a.At) // one time for the event and the conversation
		ev, err := s.assignEvent(as[i])
		if err != nil {
			invalidErr = err
			break
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return nil, invalidErr
	}
	var (
		out    []core.Changed
		failed error // of as[len(out)], which was rolled back
	)
	err := s.do(ctx, func(w *wtx) error {
		out, failed = out[:0], nil
		for i := range evs {
			if i == 0 {
				ch, err := w.assign(as[0], evs[0])
				if err != nil {
					return err // nothing to keep: the op is rolled back
				}
				out = append(out, ch)
				continue
			}
			if _, err := w.exec(stSavepoint); err != nil {
				return fmt.Errorf("sqlite: savepoint: %w", err)
			}
			ch, err := w.assign(as[i], evs[i])
			if err != nil {
				if _, rerr := w.exec(stRollbackTo); rerr != nil {
					return fmt.Errorf("sqlite: rollback to savepoint after %w: %w", err, rerr)
				}
				w.s.cache.forget() // what it put was rolled back
				failed = err
			}
			if _, err := w.exec(stRelease); err != nil {
				return fmt.Errorf("sqlite: release savepoint: %w", err)
			}
			if failed != nil {
				return nil // commit those before it
			}
			out = append(out, ch)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if failed == nil {
		failed = invalidErr
	}
	return out, failed
}

// assignEvent checks a and makes the event its assignment appends.
func (s *Store) assignEvent(a core.Assignment) (core.Message, error) {
	if a.AgentID < 0 || a.From < 0 {
		return core.Message{}, invalid("agent id %d, from %d", a.AgentID, a.From)
	}
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
	return s.eventMessage(ev, t, s.nowOr(a.At))
}

// assign applies one assignment (see Assign) with its event ev.
func (w *wtx) assign(a core.Assignment, ev core.Message) (core.Changed, error) {
	at := w.s.nowOr(a.At)
	c, err := w.conv(a.ConversationID)
	if err != nil {
		return core.Changed{}, err
	}
	if c.Status == core.StatusResolved {
		return core.Changed{}, conflict("conversation %d is resolved", c.ID)
	}
	if c.AssigneeID != a.From {
		return core.Changed{}, conflict("conversation %d is assigned to %d, not %d", c.ID, c.AssigneeID, a.From)
	}
	if a.AgentID != 0 {
		ag, err := scanAgent(w.queryRow(stAgent, a.AgentID))
		if err != nil {
			return core.Changed{}, dbErr(err, "agent %d", a.AgentID)
		}
		if !ag.Active {
			return core.Changed{}, fmt.Errorf("sqlite: agent %d is deactivated: %w", a.AgentID, core.ErrForbidden)
		}
		if a.MaxOpen > 0 {
			var n int
			if err := w.queryRow(stOpenCount, a.AgentID, c.ID).Scan(&n); err != nil {
				return core.Changed{}, dbErr(err, "count open conversations")
			}
			if n >= a.MaxOpen {
				return core.Changed{}, fmt.Errorf("sqlite: agent %d has %d open conversations: %w", a.AgentID, n, core.ErrCapacity)
			}
		}
		c.AssigneeID, c.Status = a.AgentID, core.StatusOpen
	} else {
		c.AssigneeID, c.Status = 0, core.StatusPending
		if !a.KeepPlace {
			c.QueuedAt = at
		}
	}
	c.UpdatedAt = at
	if err := w.insertMsg(&c, &ev); err != nil {
		return core.Changed{}, err
	}
	if err := w.saveConv(&c); err != nil {
		return core.Changed{}, err
	}
	return core.Changed{Conversation: c, Event: ev}, nil
}

// SetStatus implements core.Store. Reopening clears ResolvedAt; it is
// ErrConflict when the identity already has another live conversation. When
// c.Event has no content, the event appended is {resolved|reopened} from kefu.
func (s *Store) SetStatus(ctx context.Context, c core.StatusChange) (core.Changed, error) {
	var t core.EventType
	switch c.Status {
	case core.StatusResolved:
		t = core.EventResolved
	case core.StatusOpen:
		t = core.EventReopened
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
		conv, err := w.conv(c.ConversationID)
		if err != nil {
			return err
		}
		if c.From != "" && conv.Status != c.From {
			return conflict("conversation %d is %s, not %s", conv.ID, conv.Status, c.From)
		}
		if c.Status == core.StatusResolved {
			conv.Status, conv.ResolvedAt, conv.UpdatedAt = core.StatusResolved, at, at
		} else {
			reopen(&conv, at)
		}
		if err := w.insertMsg(&conv, &ev); err != nil {
			return err
		}
		if err := w.saveConv(&conv); err != nil {
			return err
		}
		out = core.Changed{Conversation: conv, Event: ev}
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
	var st wstmt
	switch {
	case r.ByContact && r.Status == core.MsgDelivered:
		st = stMarkContactDelivered
	case r.ByContact && r.Status == core.MsgRead:
		st = stMarkContactRead
	case r.Status == core.MsgDelivered:
		st = stMarkAgentDelivered
	case r.Status == core.MsgRead:
		st = stMarkAgentRead
	default:
		return 0, invalid("receipt status %q (want delivered or read)", r.Status)
	}
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		if _, err := w.conv(r.ConversationID); err != nil {
			return err
		}
		res, err := w.exec(st, string(r.Status), r.ConversationID, r.UpToSeq)
		if err != nil {
			return dbErr(err, "mark conversation %d", r.ConversationID)
		}
		n, err = res.RowsAffected()
		return dbErr(err, "mark conversation %d", r.ConversationID)
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

// emailKey is the agents' unique key: the email in lower case.
func emailKey(email string) string { return strings.ToLower(email) }

// CreateAgent implements core.Store. An empty Role is RoleAgent.
func (s *Store) CreateAgent(ctx context.Context, a core.Agent) (core.Agent, error) {
	if err := checkAgent(&a); err != nil {
		return core.Agent{}, err
	}
	a.CreatedAt = s.nowOr(a.CreatedAt)
	err := s.do(ctx, func(w *wtx) error {
		res, err := w.exec(stAgentIns, a.Email, emailKey(a.Email), a.Name, string(a.Role), a.PasswordHash,
			a.Active, a.WeComUserID, a.SlackUser, toDB(a.CreatedAt))
		if err != nil {
			return dbErr(err, "create agent %s", a.Email)
		}
		a.ID, err = res.LastInsertId()
		return dbErr(err, "create agent")
	})
	if err != nil {
		return core.Agent{}, err
	}
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
		cur, err := scanAgent(w.queryRow(stAgent, a.ID))
		if err != nil {
			return dbErr(err, "agent %d", a.ID)
		}
		if !cur.Same(prev) {
			return fmt.Errorf("sqlite: agent %d: %w", a.ID, core.ErrStale)
		}
		res, err := w.exec(stAgentUpd, a.Email, emailKey(a.Email), a.Name, string(a.Role), a.PasswordHash,
			a.Active, a.WeComUserID, a.SlackUser, a.ID)
		if err != nil {
			return dbErr(err, "update agent %d", a.ID)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = lastAdmin(w.tx.QueryRowContext(w.ctx, `SELECT count(*) FROM agents WHERE id = ?`, a.ID), a.ID)
			}
			return dbErr(cmpErr(err, sql.ErrNoRows), "agent %d", a.ID)
		}
		return nil
	})
}

// lastAdmin explains an agent update that changed no row: ErrConflict if
// the agent exists (row counts it), as the last active admin; else nil,
// for ErrNotFound.
func lastAdmin(row *sql.Row, id int64) error {
	var n int
	if err := row.Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: agent %d is the last active admin", core.ErrConflict, id)
	}
	return nil
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
	err := s.do(ctx, func(w *wtx) error { return w.insertOutbox(&e) })
	if err != nil {
		return core.OutboxEntry{}, err
	}
	return e, nil
}

// RetryOutbox implements core.Store.
func (s *Store) RetryOutbox(ctx context.Context, id int64, next time.Time, lastErr string) error {
	return s.do(ctx, func(w *wtx) error {
		res, err := w.exec(stOutboxRetry, toDB(next), lastErr, id)
		if err != nil {
			return dbErr(err, "retry outbox entry %d", id)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return dbErr(cmpErr(err, sql.ErrNoRows), "outbox entry %d", id)
		}
		return nil
	})
}

// FinishOutbox implements core.Store. u.MessageID 0 means the entry's message.
func (s *Store) FinishOutbox(ctx context.Context, id int64, u *core.StatusUpdate) error {
	if u != nil && !u.Status.Valid() {
		return invalid("message status %q", u.Status)
	}
	return s.do(ctx, func(w *wtx) error {
		e, err := scanOutbox(w.queryRow(stOutbox, id))
		if err != nil {
			return dbErr(err, "outbox entry %d", id)
		}
		if u != nil {
			uu := *u
			if uu.MessageID == 0 {
				uu.MessageID = e.MessageID
			}
			if uu.MessageID == 0 {
				return invalid("status update for outbox entry %d, which has no message", id)
			}
			if _, _, err := w.updateStatus(uu); err != nil {
				return err
			}
		}
		_, err = w.exec(stOutboxDel, id)
		return dbErr(err, "delete outbox entry %d", id)
	})
}
