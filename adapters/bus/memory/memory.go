// Package memory is kefu's default bus: an in-process pub/sub for
// single-node deployments and tests. It implements bridge.Bus.
//
// One process is the whole cluster: work and fan-out topics share one
// namespace, and a work topic has no consumer groups, so every subscription
// would receive every message. The Bus therefore allows one live
// WorkSubscriber subscription per topic in the process (a second is an
// error); fan-out topics take any number. Nothing survives a restart, and a
// message published while a topic has no subscription is dropped, which kefu
// tolerates because the store holds everything the bus announces (clients
// resume by sequence number, the outbox sweep finds lost kicks).
//
// # How a message travels
//
// Each subscription has a queue and one goroutine. Publish appends a copy
// of each message (its own Ack and Nack) to the queue of every subscription
// of the topic and returns; it never waits for a subscriber and starts no
// goroutine. The subscription's goroutine passes the queued messages on in
// the order they were queued, one at a time: the next only after the
// current one is acked. A Nack makes it pass on a fresh copy of the same
// message before anything newer. So one subscription receives a topic's
// messages in publish order (for messages published from one goroutine, or
// ordered by a happens-before relation).
//
// The queue is not bounded: Publish is called on the commit path
// (core.Notifier) and must not block on a slow consumer, and dropping would
// only defer the work to the store's resume and sweep. A subscription that
// stops reading holds what was published to it until its ctx ends or the
// Bus is closed. kefu's consumers (the web channel's feed, push fallback,
// the Deliverer) ack within microseconds to milliseconds.
//
// A message a bridge.Notifier published carries the envelope it was encoded
// from; the copies keep it (bridge.CarryDecoded), so a subscriber's
// bridge.Decode returns it without reading the JSON payload.
//
// This replaced watermill's GoChannel, which started one goroutine per
// message and subscription and waited in it for the ack, and did not keep
// order on its own (BENCHMARKS.md, "Profile-driven changes").
package memory

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/bridge"
)

// keepBatch is the largest queue capacity a subscription keeps for reuse
// once drained; a larger one (left by a burst) is released to the GC.
const keepBatch = 4096

// Bus is the in-process bridge.Bus. Create it with New; close it with Close.
type Bus struct {
	closed  atomic.Bool
	closing chan struct{}
	subs    sync.WaitGroup // subscription goroutines

	mu     sync.RWMutex // guards topics, closed transitions, subs.Add
	topics map[string]*topic

	pub    publisher
	work   subscriber
	fanout subscriber
}

// topic is one topic's subscriptions. Publish reads the list without a
// lock; Subscribe and the end of a subscription replace it under mu.
type topic struct {
	mu     sync.Mutex
	list   atomic.Pointer[[]*subscription]
	worker bool // a WorkSubscriber subscription is live
}

// subscription is one Subscribe call: a queue filled by Publish and drained,
// in order, by the subscription's goroutine.
type subscription struct {
	mu    sync.Mutex
	queue []*message.Message
	wake  chan struct{} // capacity 1: the queue became non-empty
}

// New returns an in-process Bus. It logs nothing; logger is accepted so
// that callers construct every backend alike, and may be nil.
func New(logger *slog.Logger) *Bus {
	_ = logger
	b := &Bus{
		closing: make(chan struct{}),
		topics:  map[string]*topic{},
	}
	b.pub = publisher{b}
	b.work = subscriber{b: b, work: true}
	b.fanout = subscriber{b: b}
	return b
}

// Publisher publishes to any topic. Publish does not wait for subscribers.
func (b *Bus) Publisher() message.Publisher { return b.pub }

// WorkSubscriber subscribes to work topics; one live subscription per topic.
func (b *Bus) WorkSubscriber() message.Subscriber { return b.work }

// FanoutSubscriber subscribes to fan-out topics; any number of subscriptions.
func (b *Bus) FanoutSubscriber() message.Subscriber { return b.fanout }

// Features: ordered per topic; not persistent, no consumer groups, and a
// message unacked when its subscription ends is dropped.
func (b *Bus) Features() bridge.Features {
	return bridge.Features{OrderedPerTopic: true}
}

// Close ends every subscription and waits until their channels are closed.
// Messages not yet delivered are dropped. Idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil
	}
	b.closed.Store(true)
	close(b.closing)
	b.mu.Unlock()
	b.subs.Wait()
	return nil
}

func (b *Bus) publish(name string, msgs ...*message.Message) error {
	if b.closed.Load() {
		return fmt.Errorf("memory bus: publish to %q: %w", name, bridge.ErrBusClosed)
	}
	if len(msgs) == 0 {
		return nil
	}
	b.mu.RLock()
	t := b.topics[name]
	b.mu.RUnlock()
	if t == nil {
		return nil // nobody has ever subscribed: dropped, as documented
	}
	list := t.list.Load()
	if list == nil {
		return nil
	}
	for _, s := range *list {
		s.push(msgs)
	}
	return nil
}

// push queues a copy of each message, so that each subscription has its own
// Ack and Nack and its own metadata map.
func (s *subscription) push(msgs []*message.Message) {
	s.mu.Lock()
	wasEmpty := len(s.queue) == 0
	for _, m := range msgs {
		s.queue = append(s.queue, copyMessage(m))
	}
	s.mu.Unlock()
	if wasEmpty {
		select {
		case s.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// take swaps the queue for spare (emptied) and returns what was queued.
func (s *subscription) take(spare []*message.Message) []*message.Message {
	s.mu.Lock()
	got := s.queue
	s.queue = spare
	s.mu.Unlock()
	return got
}

func (b *Bus) subscribe(ctx context.Context, name string, work bool) (<-chan *message.Message, error) {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, fmt.Errorf("memory bus: subscribe to %q: %w", name, bridge.ErrBusClosed)
	}
	t, ok := b.topics[name]
	if !ok {
		t = &topic{}
		b.topics[name] = t
	}
	b.subs.Add(1)
	b.mu.Unlock()

	t.mu.Lock()
	if work && t.worker {
		t.mu.Unlock()
		b.subs.Done()
		return nil, fmt.Errorf("memory bus: work topic %q already has a subscriber in this process "+
			"(the memory bus has no consumer groups; subscribe to a work topic once)", name)
	}
	if work {
		t.worker = true
	}
	s := &subscription{wake: make(chan struct{}, 1)}
	t.replace(func(old []*subscription) []*subscription { return append(old, s) })
	t.mu.Unlock()

	out := make(chan *message.Message)
	go b.run(ctx, t, s, work, out)
	return out, nil
}

// replace sets the topic's list to edit(a copy of the current list).
// Called with t.mu held.
func (t *topic) replace(edit func([]*subscription) []*subscription) {
	var cur []*subscription
	if p := t.list.Load(); p != nil {
		cur = *p
	}
	next := edit(append([]*subscription(nil), cur...))
	t.list.Store(&next)
}

// run passes the messages of one subscription on in order, one at a time,
// until the subscription ends.
func (b *Bus) run(ctx context.Context, t *topic, s *subscription, work bool, out chan<- *message.Message) {
	defer b.subs.Done()
	defer close(out)
	// Leave the topic (and let it take a new work subscriber) before out is
	// closed, so a consumer that sees the close can subscribe again at once.
	defer func() {
		t.mu.Lock()
		t.replace(func(l []*subscription) []*subscription {
			for i, x := range l {
				if x == s {
					return append(l[:i], l[i+1:]...)
				}
			}
			return l
		})
		if work {
			t.worker = false
		}
		t.mu.Unlock()
	}()
	var batch []*message.Message
	for {
		batch = s.take(batch[:0])
		if len(batch) == 0 {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			case <-b.closing:
				return
			}
		}
		for i, m := range batch {
			batch[i] = nil
			if !b.deliver(ctx, m, out) {
				return
			}
		}
		if cap(batch) > keepBatch {
			batch = nil
		}
	}
}

// deliver passes m on and waits for its Ack; on Nack it passes on a fresh
// copy, until one is acked. It returns false when the subscription ends.
func (b *Bus) deliver(ctx context.Context, m *message.Message, out chan<- *message.Message) bool {
	for {
		select {
		case out <- m:
		case <-ctx.Done():
			return false
		case <-b.closing:
			return false
		}
		select {
		case <-m.Acked():
			return true
		case <-m.Nacked():
			m = copyMessage(m)
		case <-ctx.Done():
			return false
		case <-b.closing:
			return false
		}
	}
}

// copyMessage copies m without its Ack and Nack or its context, but with
// the envelope a bridge.Notifier attached to it, so that the subscriber's
// bridge.Decode skips the JSON (contexts do not cross a bus; the envelope is
// an in-process shortcut for what the payload holds).
func copyMessage(m *message.Message) *message.Message {
	c := m.Copy()
	bridge.CarryDecoded(m, c)
	return c
}

type publisher struct{ b *Bus }

// Publish queues a copy of the messages for each subscription of topic that
// exists now, in order. It does not wait for them.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs...)
}

// CarriesEnvelopes implements bridge.EnvelopeCarrier: subscribers get
// copies that keep the envelope a bridge.Notifier attached, and nothing
// leaves the process, so the Notifier need not encode a payload.
func (publisher) CarriesEnvelopes() bool { return true }

// Close does nothing: the Bus owns the publisher (see bridge.Bus).
func (publisher) Close() error { return nil }

type subscriber struct {
	b    *Bus
	work bool
}

// Subscribe returns the messages of topic published from now on, in order;
// the channel is closed when ctx ends or the Bus is closed.
func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.b.subscribe(ctx, topic, s.work)
}

// Close does nothing: the Bus owns the subscriber (see bridge.Bus).
func (subscriber) Close() error { return nil }

var (
	_ bridge.Bus             = (*Bus)(nil)
	_ message.Publisher      = publisher{}
	_ bridge.EnvelopeCarrier = publisher{}
	_ message.Subscriber     = subscriber{}
)
