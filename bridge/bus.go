// Package bridge is kefu's canonical message bus, built on watermill: the
// Bus seam every backend implements, the topics, the versioned envelope that
// travels on them, the Notifier that publishes what the core committed, the
// router with kefu's middleware, and outbound delivery from the outbox.
//
// The bus carries signals, never the only copy of anything: what it carries
// is already committed in the store (a message, an outbox entry), so a lost
// bus message delays work but loses nothing. Updates missed by a socket are
// recovered by sequence number; an outbox kick that is lost is found again by
// the Deliverer's sweep.
package bridge

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrBusClosed is returned (wrapped) by a Bus's publisher and subscribers
// after the Bus has been closed.
var ErrBusClosed = errors.New("bus closed")

// Bus is a message bus backend: the in-process default (adapters/bus/memory)
// or a networked one shared by the nodes of a cluster (adapters/bus/redis,
// adapters/bus/nats). Every implementation passes the contract suite in
// bridge/bustest, which reads Features to know what to expect.
//
// Topics come in two kinds, and the kind is chosen by the subscriber a
// consumer uses, not by the topic's name (see topics.go for kefu's topics):
//
//   - A work topic carries jobs that must run once per cluster (outbound
//     delivery for a channel instance). Every node subscribes through
//     WorkSubscriber; each message goes to one subscription in the whole
//     cluster (a consumer group).
//   - A fan-out topic carries news every node needs (updates for the sockets
//     it holds). Every subscription made through FanoutSubscriber, on every
//     node, receives every message.
//
// Contract, for every implementation:
//
//   - Safe for concurrent use. Publisher, WorkSubscriber, FanoutSubscriber
//     and Features return the same values on every call and may be called
//     from any goroutine; so may the returned publisher and subscribers.
//   - Delivery is at least once from the moment a subscription exists: a
//     message may arrive more than once (a Nack, a redelivery after a node
//     died holding it). Handlers must be idempotent; kefu's are, because the
//     store's unique keys and the outbox decide what is done, not the bus.
//   - To get the next message of a subscription, Ack or Nack the current
//     one. Nack redelivers the message, at once or after a backend-specific
//     delay. (The memory bus redelivers it before anything newer; a
//     networked backend may deliver newer messages first.)
//   - A subscription ends, and its channel is closed, when the ctx given to
//     Subscribe is cancelled or the Bus is closed. A message received and
//     not acked then is redelivered later (RedeliversUnacked) or dropped.
//   - The Bus owns its publisher and subscribers: their Close methods do
//     nothing. (A watermill Router closes the publishers and subscribers of
//     its handlers when it stops; the shared connection must outlive any
//     one router.) End a subscription by cancelling its ctx; release
//     everything by closing the Bus.
//   - Close ends every subscription, flushes what the publisher buffered if
//     the backend buffers, and releases connections. It is idempotent and
//     returns once the subscriptions' channels are closed. After Close,
//     Publish and Subscribe return errors wrapping ErrBusClosed.
type Bus interface {
	// Publisher publishes to work and fan-out topics alike. Publish returns
	// once the backend has accepted the messages (for the memory bus: once
	// they are queued for the subscriptions that exist at that moment); it
	// does not wait for subscribers to handle them.
	Publisher() message.Publisher
	// WorkSubscriber subscribes to work topics: each message of a work topic
	// goes to ONE subscription in the whole cluster (a consumer group).
	WorkSubscriber() message.Subscriber
	// FanoutSubscriber subscribes to fan-out topics: every subscription, on
	// every node, receives every message of the topic.
	FanoutSubscriber() message.Subscriber
	// Features says what the backend guarantees.
	Features() Features
	// Close releases the Bus (see the contract above).
	Close() error
}

// Features is what a Bus backend guarantees beyond the contract every Bus
// keeps. bustest reads it to decide which checks apply; code must not rely
// on a feature it has not checked for.
type Features struct {
	// Persistent: messages are stored by the backend, so a message published
	// while nobody is subscribed (or while a node restarts) reaches a
	// subscription made later. Without it such messages may be dropped.
	Persistent bool
	// ConsumerGroups: Bus values connected to the same backend (one per
	// node) share work topics, each message going to one of them. A backend
	// without it serves one process only, which must subscribe to each work
	// topic once.
	ConsumerGroups bool
	// OrderedPerTopic: one subscription receives the messages of a topic in
	// the order they were published (messages published from one goroutine,
	// or ordered by a happens-before relation).
	OrderedPerTopic bool
	// RedeliversUnacked: a message received but neither acked nor nacked when
	// its subscription ended (the node died) is delivered again to a later
	// or another subscription of the group.
	RedeliversUnacked bool
}
