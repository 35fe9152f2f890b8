package core

import "context"

// UpdateType says what an Update carries.
type UpdateType string

const (
	// UpdateMessage: a message or event was appended (Message, Conversation).
	UpdateMessage UpdateType = "message"
	// UpdateConversation: a conversation's state changed without a new
	// message (Conversation).
	UpdateConversation UpdateType = "conversation"
	// UpdateStatus: one message's delivery status moved (Message).
	UpdateStatus UpdateType = "status"
	// UpdateReceipt: a reader received or read a conversation up to a
	// sequence number (Receipt, Conversation).
	UpdateReceipt UpdateType = "receipt"
	// UpdateTyping: someone is typing (Typing). Not stored.
	UpdateTyping UpdateType = "typing"
)

// Update is one committed change (or a typing signal) as sockets and
// agent-side channels learn of it. Updates travel on the bus's fan-out topic,
// so every node can pass them to the sockets it holds.
type Update struct {
	Type         UpdateType    `json:"type"`
	Conversation *Conversation `json:"conversation,omitempty"`
	Message      *Message      `json:"message,omitempty"`
	Receipt      *Receipt      `json:"receipt,omitempty"`
	Typing       *Typing       `json:"typing,omitempty"`
}

// ConversationID is the conversation the update belongs to.
func (u Update) ConversationID() int64 {
	switch {
	case u.Conversation != nil:
		return u.Conversation.ID
	case u.Message != nil:
		return u.Message.ConversationID
	case u.Receipt != nil:
		return u.Receipt.ConversationID
	case u.Typing != nil:
		return u.Typing.ConversationID
	}
	return 0
}

// Typing is a typing indicator.
type Typing struct {
	ConversationID int64      `json:"conversation_id"`
	SenderKind     SenderKind `json:"sender_kind"`
	SenderID       int64      `json:"sender_id,omitempty"`
	On             bool       `json:"on"`
}

// Notifier is told what the core committed. bridge implements it by
// publishing on the bus; tests use a recording fake.
//
// Both methods are called after the commit, may be called concurrently, and
// must not block for long. Neither can lose data: a client that misses an
// update resumes from its sequence number, and an outbox entry whose kick is
// lost is found again by the outbox sweep.
type Notifier interface {
	// Publish passes updates to every node's sockets and subscribers.
	Publish(ctx context.Context, updates ...Update)
	// Deliver hands a committed outbox entry to its channel's delivery.
	Deliver(ctx context.Context, e OutboxEntry)
}
