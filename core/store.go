package core

import (
	"context"
	"time"
)

// Store persists kefu's state. It is the one seam between the domain and a
// database; adapters/store/sqlite and adapters/store/postgres implement it and
// both pass the contract suite in core/storetest.
//
// Contract, for every implementation:
//   - Safe for concurrent use. Every write method is atomic: it commits all of
//     its effects or none, and it returns only after its commit is durable at
//     the configured level (store.sync). Implementations are expected to batch
//     concurrent writes into shared transactions (group commit); a caller is
//     told of success only after the transaction holding its write commits,
//     and one caller's failure (a conflict, a constraint) never fails another
//     caller's write in the same batch.
//   - Message IDs increase in commit order: a reader that has seen ID n will
//     never later see a new message with an ID below n. Agents use the ID as
//     their cursor across conversations (Feed).
//   - Sequence numbers are per conversation, start at 1, and have no gaps or
//     duplicates.
//   - A DedupKey is stored at most once, store-wide. Writing a message whose
//     key exists returns the existing message and Duplicate = true, changes
//     nothing else, and is not an error.
//   - A message status only moves forward (MessageStatus.Advances).
//   - Reads return ErrNotFound for a missing row.
//   - ctx cancellation abandons the wait, not necessarily the write: a write
//     whose caller gave up may still commit.
//   - Close waits for queued writes to finish and then releases the database;
//     calls after Close return ErrClosed.
type Store interface {
	// Ingest records a message from a customer in one transaction: it finds or
	// creates the contact and its identity (in.Channel, in.ExternalID); finds
	// the identity's conversation, reopening a resolved one whose ResolvedAt is
	// within in.ReopenWithin of in.Message.CreatedAt or else starting a new
	// pending one; and appends the message (SenderContact, Public) with the
	// next sequence number, moving LastInboundAt to its CreatedAt.
	Ingest(ctx context.Context, in Inbound) (Ingested, error)

	// Append adds a message to an existing conversation with the next sequence
	// number. With a.Deliver set, it also enqueues an outbox entry for the
	// conversation's channel (key: the conversation) in the same transaction.
	Append(ctx context.Context, a Append) (Appended, error)

	// Assign sets the conversation's assignee to a.AgentID if its current
	// assignee is a.From and it is not resolved, and appends a.Event. With
	// AgentID > 0 the status becomes open; when a.MaxOpen > 0 and the agent
	// already has MaxOpen open conversations it fails with ErrCapacity. With
	// AgentID 0 the conversation goes back to the queue (pending, QueuedAt
	// now). If the assignee is no longer a.From it fails with ErrConflict, so
	// of two agents racing to take a conversation exactly one wins. An
	// agent that is not active is refused with ErrForbidden, in the same
	// transaction: a deactivation on another node that a drain has not
	// heard of yet cannot be undone by it.
	Assign(ctx context.Context, a Assignment) (Changed, error)

	// AssignAll applies the assignments in order, each as Assign would. It
	// stops at the first one that fails: it returns the changes of those
	// before it, which stay applied, with that one's error; the ones after it
	// are not tried. A store that can commits them together, so that routing
	// a page of the queue costs one commit, not one per conversation.
	AssignAll(ctx context.Context, as []Assignment) ([]Changed, error)

	// SetStatus resolves or reopens a conversation and appends c.Event.
	// Resolving sets ResolvedAt; reopening makes it open if it has an
	// assignee, pending (queued now) if not. It fails with ErrConflict when
	// the conversation is not in c.From (when c.From is set).
	SetStatus(ctx context.Context, c StatusChange) (Changed, error)

	// UpdateStatus moves one message's delivery status forward and records
	// u.Reason (failed) and u.ExternalID when given. changed is false when
	// the status would not advance; then only u.ExternalID is recorded, if
	// the message has none yet (a receipt that got ahead of the send's
	// answer).
	UpdateStatus(ctx context.Context, u StatusUpdate) (m Message, changed bool, err error)

	// MarkUpTo advances to r.Status every message of the conversation with a
	// sequence number ≤ r.UpToSeq that the reader receives: for a contact,
	// public messages not sent by the contact; for an agent, the contact's
	// messages. It returns how many messages changed.
	MarkUpTo(ctx context.Context, r Receipt) (int, error)

	// Conversation, Contact, Message read single rows.
	Conversation(ctx context.Context, id int64) (Conversation, error)
	Contact(ctx context.Context, id int64) (Contact, error)
	Message(ctx context.Context, id int64) (Message, error)
	// MessageByDedup finds the message stored under a DedupKey.
	MessageByDedup(ctx context.Context, key string) (Message, error)
	// MessageByExternalID finds a message kefu sent through channel by the
	// provider's id for it.
	MessageByExternalID(ctx context.Context, channel, externalID string) (Message, error)
	// Conversations lists conversations matching f, newest first.
	Conversations(ctx context.Context, f ConversationFilter) ([]Conversation, error)
	// Messages lists one conversation's messages in sequence order (see MessageQuery).
	Messages(ctx context.Context, q MessageQuery) ([]Message, error)
	// Contacts reads the contacts with the given IDs (at most MaxBatchRead),
	// in no particular order; an ID with no contact is left out. With
	// LastMessages it lets a list of conversations show who and what without
	// a read per conversation.
	Contacts(ctx context.Context, ids []int64) ([]Contact, error)
	// LastMessages returns, for each of the given conversations (at most
	// MaxBatchRead), its newest message that is not an event (KindEvent):
	// a customer, agent or bot message, or a note. Conversations with none,
	// or that do not exist, are left out of the map.
	LastMessages(ctx context.Context, convIDs []int64) (map[int64]Message, error)
	// Feed lists messages of all conversations with ID > afterID, in ID
	// order, at most limit: an agent's stream resumed from their cursor.
	Feed(ctx context.Context, afterID int64, limit int) ([]Message, error)
	// Queue lists pending conversations in the order they are to be served
	// (QueuedAt, then ID), at most limit (which is at most 500: larger
	// limits are cut to it).
	Queue(ctx context.Context, limit int) ([]Conversation, error)
	// QueuePosition returns conversation id's place in the queue, 1 for the
	// next one to be served, or 0 when it is not waiting (not pending, or
	// not found).
	QueuePosition(ctx context.Context, id int64) (int, error)
	// OpenCounts returns how many open conversations each agent has.
	OpenCounts(ctx context.Context) (map[int64]int, error)

	// CreateAgent stores a new agent and returns it with its ID. An email
	// already taken (case-insensitively) is ErrConflict.
	CreateAgent(ctx context.Context, a Agent) (Agent, error)
	// UpdateAgent replaces agent prev.ID with next, if it is still prev as
	// the caller read it (Agent.Same): when another change came between,
	// ErrStale, and nothing changes, so that no change undoes another made
	// on another node. A change that would leave no active admin (the agent
	// is one, next is not, and no other is) is ErrConflict and changes
	// nothing, atomically with other nodes' changes.
	UpdateAgent(ctx context.Context, prev, next Agent) error
	Agent(ctx context.Context, id int64) (Agent, error)
	AgentByEmail(ctx context.Context, email string) (Agent, error)
	// Agents lists all agents, active or not, by ID.
	Agents(ctx context.Context) ([]Agent, error)

	// Enqueue stores an outbox entry that carries its own payload (no message).
	Enqueue(ctx context.Context, e OutboxEntry) (OutboxEntry, error)
	// OutboxEntry reads one entry.
	OutboxEntry(ctx context.Context, id int64) (OutboxEntry, error)
	// OutboxHead returns the oldest entry with the given channel and key.
	OutboxHead(ctx context.Context, channel, key string) (OutboxEntry, error)
	// Outbox lists the head (oldest entry) of each channel and key whose
	// head is due at or before now (NextAttemptAt ≤ now), in ID order, at
	// most limit; channel "" means every channel. Entries behind a head wait
	// for it (a key is delivered in order), so they are not listed: a
	// backlog behind a head that backs off must not fill the page.
	Outbox(ctx context.Context, channel string, now time.Time, limit int) ([]OutboxEntry, error)
	// RetryOutbox records a failed attempt: Attempts+1, LastError, and the
	// time of the next attempt.
	RetryOutbox(ctx context.Context, id int64, next time.Time, lastErr string) error
	// FinishOutbox removes a delivered or permanently failed entry and, in the
	// same transaction, applies u to its message (u may be nil).
	FinishOutbox(ctx context.Context, id int64, u *StatusUpdate) error
	// OutboxStats reports the number of entries and the oldest one's age base.
	OutboxStats(ctx context.Context) (depth int, oldest time.Time, err error)

	// MoveIdentity re-keys an identity whose provider id changed (a Telegram
	// chat migrated to a new chat id): (channel, from) becomes (channel, to)
	// for the same contact, and every conversation of the identity follows
	// (its ExternalID becomes to), so that deliveries go to the new id and
	// the customer's next message from it continues the same conversation.
	// A missing (channel, from) is ErrNotFound (it may have been moved
	// already); an existing (channel, to) is ErrConflict; from == to changes
	// nothing.
	MoveIdentity(ctx context.Context, channel, from, to string) error

	// EnsureSetting returns the value stored under key, storing value first
	// when the key is absent. Of concurrent callers (on any node) the first
	// writer wins and everyone gets its value. Used for generated secrets.
	EnsureSetting(ctx context.Context, key, value string) (string, error)
	// Setting reads the value stored under key (ErrNotFound when absent).
	Setting(ctx context.Context, key string) (string, error)
	// PutSetting stores value under key, replacing any earlier value. Used
	// for cursors such as an agent-side channel's place in the message log.
	PutSetting(ctx context.Context, key, value string) error
	// MediaUsed reports whether a stored message carries the file key.
	MediaUsed(ctx context.Context, key string) (bool, error)
	// Settings lists the settings whose key starts with prefix and sorts
	// after after, in key order, at most limit (1 to MaxBatchRead, else
	// ErrInvalid) of them. Passing the last key back pages through them.
	Settings(ctx context.Context, prefix, after string, limit int) ([]Setting, error)
	// ReplaceSetting stores value under key if the value stored there is
	// old, and reports whether it did: false, with no error, when the key
	// holds another value or none. Of two callers racing from the same old
	// value, on any node, exactly one replaces it.
	ReplaceSetting(ctx context.Context, key, old, value string) (bool, error)
	// DeleteSetting removes key if the value stored there is old, and
	// reports whether it did, as ReplaceSetting does.
	DeleteSetting(ctx context.Context, key, old string) (bool, error)

	// LeaseStore keeps cluster leases (core/lease.go).
	LeaseStore

	// CreateSession stores an agent's login session. Only a hash of the
	// session's token is ever stored.
	CreateSession(ctx context.Context, s Session) error
	// Session reads a session by the hash of its token, expired or not.
	Session(ctx context.Context, tokenHash string) (Session, error)
	// RevokeSession deletes one session; a missing one is not an error.
	RevokeSession(ctx context.Context, tokenHash string) error
	// RevokeSessions deletes every session of an agent (password reset,
	// deactivation) and returns how many there were.
	RevokeSessions(ctx context.Context, agentID int64) (int, error)
	// DeleteExpiredSessions removes sessions that expired before now.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)

	// DeviceStore keeps mobile apps' push tokens (core/device.go).
	DeviceStore

	// Ping checks that the store is usable (for /readyz).
	Ping(ctx context.Context) error
	// Close flushes queued writes and closes the store. It is idempotent.
	Close() error
}

// MaxBatchRead is the most IDs one Contacts or LastMessages call takes;
// more is ErrInvalid.
const MaxBatchRead = 1000

// Setting is one key and its value in the store's settings.
type Setting struct {
	Key, Value string
}

// Session is an agent's login: a bearer token (stored only as a hash) that
// expires and can be revoked.
type Session struct {
	TokenHash string
	AgentID   int64
	CreatedAt time.Time
	ExpiresAt time.Time
	IP        string // where the login came from
	UserAgent string
}

// Inbound is a customer's message as a channel hands it to the core.
type Inbound struct {
	Channel    string // channel instance name
	ExternalID string // the customer's id on that instance
	Name       string // display name from the provider, if any
	// Message holds the content (Kind, Text, Media), the DedupKey and
	// CreatedAt (when kefu received it). The store sets the sender, the
	// visibility, the status (sent: kefu has it; agents' receipts move it to
	// delivered and read, see MarkUpTo) and the IDs.
	Message Message
	// ReopenWithin: a resolved conversation younger than this is reopened.
	ReopenWithin time.Duration
	// KeepsWindow: the message does not open or extend the live
	// conversation's reply window (LastInboundAt stays): it says the
	// customer can no longer be written to (a WeChat unfollow).
	KeepsWindow bool
	// Greeting (Service.Ingest only; stores ignore it) is the channel's
	// welcome for this message (Telegram's /start, a WeChat follow): a bot
	// message with its own DedupKey, appended right after Message and
	// before routing, so that the customer reads it before any offline or
	// busy reply.
	Greeting *Message
}

// Ingested is what Ingest did.
type Ingested struct {
	Contact      Contact
	Conversation Conversation // after the message
	Message      Message
	// Events holds the event messages the ingest appended before Message
	// (a reopened event).
	Events          []Message
	NewContact      bool
	NewConversation bool
	Reopened        bool
	// Duplicate: the DedupKey was already stored. Message is the stored one
	// and nothing was written.
	Duplicate bool
}

// Append adds a message to a conversation.
type Append struct {
	ConversationID int64
	// Message: SenderKind, SenderID, Visibility, Kind, Text, Media, Event,
	// DedupKey, ResendOf, Status and CreatedAt are kept; IDs are assigned.
	Message Message
	// Deliver enqueues the message in the outbox of the conversation's channel.
	Deliver bool
}

// Appended is what Append did.
type Appended struct {
	Conversation Conversation
	Message      Message
	Outbox       *OutboxEntry // set when Deliver enqueued an entry
	Duplicate    bool         // see Ingested.Duplicate
}

// Assignment asks to change a conversation's assignee.
type Assignment struct {
	ConversationID int64
	AgentID        int64 // 0: unassign (back to the queue)
	From           int64 // expected current assignee; 0: unassigned
	MaxOpen        int   // 0: no limit
	Event          Message
	At             time.Time
	// KeepPlace: an unassignment keeps the conversation's place in the
	// queue (QueuedAt) instead of sending it to the back: kefu, not the
	// agent, takes it back (the agent was deactivated).
	KeepPlace bool
}

// StatusChange asks to resolve or reopen a conversation.
type StatusChange struct {
	ConversationID int64
	Status         ConversationStatus // StatusResolved or StatusOpen (reopen)
	From           ConversationStatus // expected current status, "" for any
	Event          Message
	At             time.Time
}

// Changed is a conversation after a change, with the event appended for it.
type Changed struct {
	Conversation Conversation
	Event        Message
}

// StatusUpdate moves a message's delivery status.
type StatusUpdate struct {
	MessageID  int64
	Status     MessageStatus
	Reason     string // for MsgFailed: the provider's reason, shown to agents
	ExternalID string // the provider's id for the message, if newly known
}

// Receipt says a reader has received (delivered) or read a conversation up
// to a sequence number.
type Receipt struct {
	ConversationID int64
	UpToSeq        int64
	Status         MessageStatus // MsgDelivered or MsgRead
	ByContact      bool          // the customer read; else an agent read
	// AgentID is the agent who read, when an agent did and it is known:
	// any agent's receipt moves the customer's messages to delivered or
	// read, but only the assignee's cancels the assignee's push.
	AgentID int64
}

// ConversationFilter selects conversations. Zero fields do not filter.
type ConversationFilter struct {
	Statuses   []ConversationStatus
	AssigneeID int64
	Unassigned bool
	ContactID  int64
	Channel    string
	ExternalID string
	BeforeID   int64 // paging: only IDs below this
	Limit      int   // default 50, at most 500
}

// MessageQuery selects one conversation's messages, in sequence order.
// With BeforeSeq set it returns the Limit newest messages before it (paging
// back through history); otherwise the Limit oldest after AfterSeq.
type MessageQuery struct {
	ConversationID int64
	AfterSeq       int64
	BeforeSeq      int64
	Limit          int  // default 100, at most 1000
	PublicOnly     bool // what a customer may see
}
