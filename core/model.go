// Package core is kefu's domain: contacts and their channel identities,
// conversations and the messages in them, agents, presence, and the routing
// that decides which agent handles which conversation.
//
// core knows nothing of transports, buses or databases. It defines the Store
// it persists through (implemented in adapters/store/...), the Notifier it
// tells about committed changes (implemented by bridge), and the Service that
// channels and the web API call.
package core

import (
	"fmt"
	"time"
)

// ConversationStatus is where a conversation stands.
type ConversationStatus string

const (
	// StatusPending: waiting in the queue for an agent. A new conversation
	// starts pending; routing moves it to open by assigning it.
	StatusPending ConversationStatus = "pending"
	// StatusOpen: assigned to an agent (or reopened) and being handled.
	StatusOpen ConversationStatus = "open"
	// StatusResolved: closed. A customer message within routing.reopen_within
	// reopens it; after that it starts a new conversation.
	StatusResolved ConversationStatus = "resolved"
)

// Valid reports whether s is a known status.
func (s ConversationStatus) Valid() bool {
	return s == StatusPending || s == StatusOpen || s == StatusResolved
}

// SenderKind says who wrote a message.
type SenderKind string

const (
	SenderContact SenderKind = "contact" // the customer
	SenderAgent   SenderKind = "agent"   // a human agent
	SenderBot     SenderKind = "bot"     // an automatic reply (offline or busy reply, greeting)
	SenderSystem  SenderKind = "system"  // kefu itself: assignment, status changes
)

// Visibility says who may see a message.
type Visibility string

const (
	Public   Visibility = "public"   // the customer and agents
	Internal Visibility = "internal" // agents only: notes and internal events
)

// ContentKind is what a message holds.
type ContentKind string

const (
	KindText  ContentKind = "text"
	KindImage ContentKind = "image"
	KindFile  ContentKind = "file"
	KindEvent ContentKind = "event" // a conversation event (assignment, close…); see EventType
	// KindTemplate is a message template the provider has approved
	// (WhatsApp): the one kind of message a provider accepts outside its
	// reply window. Text holds the template's name as the conversation's
	// channel knows it (its config key, e.g. "reopen"); the channel fills
	// in the rest when it sends. Only agents send templates (Service.SendTemplate).
	KindTemplate ContentKind = "template"
)

// MessageStatus tracks an outgoing message's delivery. It only moves forward:
// pending → sent → delivered → read, or to failed from any state before read.
type MessageStatus string

const (
	MsgPending   MessageStatus = "pending"   // committed, not yet handed to the recipient's channel
	MsgSent      MessageStatus = "sent"      // the channel accepted it
	MsgDelivered MessageStatus = "delivered" // the recipient's device has it
	MsgRead      MessageStatus = "read"      // the recipient has read it
	MsgFailed    MessageStatus = "failed"    // permanently undeliverable; FailReason says why
)

func (s MessageStatus) rank() int {
	switch s {
	case MsgPending:
		return 0
	case MsgSent:
		return 1
	case MsgDelivered:
		return 2
	case MsgRead:
		return 3
	case MsgFailed:
		return 4
	}
	return -1
}

// Valid reports whether s is a known status.
func (s MessageStatus) Valid() bool { return s.rank() >= 0 }

// Advances reports whether moving a message from s to next is a step forward.
// Statuses never move back: a late "delivered" after "read" is ignored, and
// "failed" is final. A message already read cannot fail.
func (s MessageStatus) Advances(next MessageStatus) bool {
	if !next.Valid() || !s.Valid() || s == MsgFailed {
		return false
	}
	if next == MsgFailed {
		return s != MsgRead
	}
	return next.rank() > s.rank()
}

// EventType names a conversation event carried by a KindEvent message.
type EventType string

const (
	EventAssigned    EventType = "assigned"    // an agent was assigned (by routing, take or admin)
	EventTransferred EventType = "transferred" // moved from one agent to another
	EventUnassigned  EventType = "unassigned"  // back to the queue
	EventResolved    EventType = "resolved"    // closed
	EventReopened    EventType = "reopened"    // reopened by the customer or an agent
	// EventDeliveryFailed: a reply the customer's channel refused for good
	// (the message is failed); AgentID is its author (0 for a bot), and
	// the event's text is the reason.
	EventDeliveryFailed EventType = "delivery_failed"
)

// Contact is a customer. Contacts are not merged across channels.
type Contact struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Identity is how one channel instance knows a contact: the instance name and
// the provider's id for the person (openid, wa_id, Telegram chat id, widget
// visitor id…). (Channel, ExternalID) is unique.
type Identity struct {
	Channel    string `json:"channel"`
	ExternalID string `json:"external_id"`
	ContactID  int64  `json:"contact_id"`
}

// Conversation is one support thread with a contact on one channel instance.
// Its ID is also the short number shown everywhere as #ID.
type Conversation struct {
	ID         int64              `json:"id"`
	ContactID  int64              `json:"contact_id"`
	Channel    string             `json:"channel"`     // customer channel instance
	ExternalID string             `json:"external_id"` // the contact's identity on Channel
	Status     ConversationStatus `json:"status"`
	AssigneeID int64              `json:"assignee_id,omitempty"` // 0: unassigned
	LastSeq    int64              `json:"last_seq"`              // sequence number of the newest message
	// LastInboundAt is when kefu received the customer's last message; reply
	// windows (WhatsApp 24 h, WeChat 48 h) run from it.
	LastInboundAt time.Time `json:"last_inbound_at"`
	// QueuedAt orders the queue: when the conversation last became pending.
	QueuedAt   time.Time `json:"queued_at"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	ResolvedAt time.Time `json:"resolved_at"`
}

// Number is the conversation's short number as shown to people: "#123".
func (c Conversation) Number() string { return fmt.Sprintf("#%d", c.ID) }

// Received moves UpdatedAt and, for a message from the customer,
// LastInboundAt to at, a message's time; never back. A message stored late
// keeps the time kefu received it (WeChat media fetched after its callback
// answered), and must not take the reply window back past a later one.
func (c *Conversation) Received(at time.Time, fromContact bool) {
	if at.After(c.UpdatedAt) {
		c.UpdatedAt = at
	}
	if fromContact && at.After(c.LastInboundAt) {
		c.LastInboundAt = at
	}
}

// Media references a stored file. The bytes live in media storage under Key.
type Media struct {
	Key  string `json:"key"`            // storage key
	Name string `json:"name,omitempty"` // original file name
	Type string `json:"type"`           // MIME type, sniffed
	Size int64  `json:"size"`
	// Preview is the storage key of a small JPEG rendering of an image
	// (longest side at most media's PreviewMax, metadata stripped); empty when
	// there is none (not an image, or too large or broken to render).
	Preview string `json:"preview,omitempty"`
}

// Event is the payload of a KindEvent message.
type Event struct {
	Type    EventType `json:"type"`
	AgentID int64     `json:"agent_id,omitempty"` // the agent assigned (assigned, transferred)
	FromID  int64     `json:"from_id,omitempty"`  // the previous agent (transferred, unassigned)
	ByID    int64     `json:"by_id,omitempty"`    // who did it: an agent id; 0 for kefu or the customer
}

// Message is one entry of a conversation: a customer or agent message, a
// note (Internal), a bot reply or an event. Seq is the conversation's
// sequence number; ID is global and increases in commit order, so it serves
// as an agent's cursor across conversations.
type Message struct {
	ID             int64         `json:"id"`
	ConversationID int64         `json:"conversation_id"`
	Seq            int64         `json:"seq"`
	SenderKind     SenderKind    `json:"sender_kind"`
	SenderID       int64         `json:"sender_id,omitempty"` // agent id or contact id
	Visibility     Visibility    `json:"visibility"`
	Kind           ContentKind   `json:"kind"`
	Text           string        `json:"text,omitempty"`
	Media          *Media        `json:"media,omitempty"`
	Event          *Event        `json:"event,omitempty"`
	Status         MessageStatus `json:"status"`
	FailReason     string        `json:"fail_reason,omitempty"`
	// DedupKey is unique across the store: "p:INSTANCE:PROVIDER_ID" for
	// provider messages, "c:SCOPE:CLIENT_ID" for client-generated ids. Empty
	// for messages that need no de-duplication.
	DedupKey string `json:"-"`
	// ExternalID is the provider's id for a message kefu sent (a wamid, a
	// Telegram message id), so status webhooks map back to it.
	ExternalID string    `json:"external_id,omitempty"`
	ResendOf   int64     `json:"resend_of,omitempty"` // the failed message this one resends
	CreatedAt  time.Time `json:"created_at"`
}

// ProviderKey is the DedupKey of a message a provider identifies by id on a
// channel instance: a provider's retries of it are stored once.
func ProviderKey(channel, providerID string) string { return "p:" + channel + ":" + providerID }

// ClientKey is the DedupKey of a message a client identifies by its own id
// (the web protocol's client id), scoped to the sender so that two clients
// cannot collide.
func ClientKey(scope, clientID string) string { return "c:" + scope + ":" + clientID }

// Outgoing reports whether the message travels from kefu to the customer's
// channel: public, not from the customer, not an event.
func (m Message) Outgoing() bool {
	return m.Visibility == Public && m.SenderKind != SenderContact && m.Kind != KindEvent
}

// VisibleToContact reports whether the customer may see m.
func (m Message) VisibleToContact() bool { return m.Visibility == Public }

// Role is an agent's permission level.
type Role string

const (
	RoleAgent Role = "agent"
	RoleAdmin Role = "admin"
)

// Agent is a person who answers customers.
type Agent struct {
	ID           int64     `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	Role         Role      `json:"role"`
	PasswordHash string    `json:"-"`
	Active       bool      `json:"active"`
	WeComUserID  string    `json:"wecom_userid,omitempty"`
	SlackUser    string    `json:"slack_user,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// Same reports whether a and b hold the same agent as stored: every field
// an update writes (CreatedAt never changes).
func (a Agent) Same(b Agent) bool {
	return a.ID == b.ID && a.Email == b.Email && a.Name == b.Name && a.Role == b.Role &&
		a.PasswordHash == b.PasswordHash && a.Active == b.Active && a.WeComUserID == b.WeComUserID &&
		a.SlackUser == b.SlackUser
}

// OutboxEntry is a committed piece of outbound work for a channel instance:
// usually a message to deliver to a customer (MessageID), or a channel-specific
// payload (an agent notification). Entries with the same Key are delivered in
// ID order; a failing entry delays only its own key.
type OutboxEntry struct {
	ID            int64     `json:"id"`
	Channel       string    `json:"channel"`
	Key           string    `json:"key"`
	MessageID     int64     `json:"message_id,omitempty"`
	Payload       []byte    `json:"payload,omitempty"`
	Attempts      int       `json:"attempts"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
}
