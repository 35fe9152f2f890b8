// The memory bus as it was before it became a purpose-built pub/sub: kefu's
// ordering layer on watermill's GoChannel (one goroutine per message and
// subscription, waiting for the ack). Kept, test-only, as the reference the
// benchmarks in memory_test.go measure the memory bus against in the same
// run (BENCHMARKS.md, "Profile-driven changes"); it is not used by kefu.

package memory_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/kefuhq/kefu/bridge"
)

// gcSeqKey is the metadata key of the per-topic sequence number. It is set by
// the gcPublisher and removed before a gcSubscriber sees the message.
const gcSeqKey = "_kefu_memory_seq"

// gcBus is the in-process bridge.Bus. Create it with newGoChannelBus; close it with Close.
type gcBus struct {
	gc      *gochannel.GoChannel
	log     *slog.Logger
	closed  atomic.Bool
	closing chan struct{}
	subs    sync.WaitGroup // forwarding goroutines, one per subscription

	mu     sync.Mutex // guards topics, closed transitions, subs.Add
	topics map[string]*gcTopic

	pub    gcPublisher
	work   gcSubscriber
	fanout gcSubscriber
}

// topic is the publishing state of one topic. Its mutex serialises
// publishing and subscribing on the topic, so that sequence numbers follow
// publish order and a new subscription knows the first number it will get.
type gcTopic struct {
	mu     sync.Mutex
	seq    uint64 // last sequence number stamped
	worker bool   // a WorkSubscriber subscription is live
}

// New returns an in-process gcBus. logger receives GoChannel's logs (its
// per-message Info logs are lowered to Debug); nil: slog.Default().
func newGoChannelBus(logger *slog.Logger) *gcBus {
	if logger == nil {
		logger = slog.Default()
	}
	wl := bridge.NewQuietWatermillLogger(logger)
	b := &gcBus{
		// The GoChannel config, field by field:
		//  - Persistent false: a persistent GoChannel keeps every message in
		//    a slice forever (memory grows without bound in a long-running
		//    process) and replays them out of order; kefu needs neither,
		//    since the store is the durable copy.
		//  - BlockPublishUntilSubscriberAck false: Publish must not wait for
		//    consumers (core.Notifier is called on the commit path). With it,
		//    the slowest gcSubscriber of a topic would set the pace of every
		//    gcPublisher and every other gcSubscriber of it, and GoChannel holds
		//    its subscribers lock while it waits, so a Subscribe to any topic
		//    would wait for that ack, and every publish behind the Subscribe.
		//    Order comes from the sequence numbers instead (see Order above).
		//  - OutputChannelBuffer 256: lets a burst be handed to a
		//    subscription's forwarding goroutine without a rendezvous per
		//    message. It does not bound anything: GoChannel keeps one
		//    goroutine per message a subscription has not yet acked.
		//  - PreserveContext false: contexts do not cross a networked bus,
		//    so they do not cross this one either; handlers behave the same
		//    on every backend.
		gc: gochannel.NewGoChannel(gochannel.Config{
			OutputChannelBuffer:            256,
			Persistent:                     false,
			BlockPublishUntilSubscriberAck: false,
			PreserveContext:                false,
		}, wl),
		log:     logger,
		closing: make(chan struct{}),
		topics:  map[string]*gcTopic{},
	}
	b.pub = gcPublisher{b}
	b.work = gcSubscriber{b: b, work: true}
	b.fanout = gcSubscriber{b: b}
	return b
}

// Publisher publishes to any topic. Publish does not wait for subscribers.
func (b *gcBus) Publisher() message.Publisher { return b.pub }

// WorkSubscriber subscribes to work topics; one live subscription per topic.
func (b *gcBus) WorkSubscriber() message.Subscriber { return b.work }

// FanoutSubscriber subscribes to fan-out topics; any number of subscriptions.
func (b *gcBus) FanoutSubscriber() message.Subscriber { return b.fanout }

// Features: ordered per topic; not persistent, no consumer groups, and a
// message unacked when its subscription ends is dropped.
func (b *gcBus) Features() bridge.Features {
	return bridge.Features{OrderedPerTopic: true}
}

// Close ends every subscription and waits until their channels are closed.
// Messages not yet delivered are dropped. Idempotent.
func (b *gcBus) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil
	}
	b.closed.Store(true)
	close(b.closing)
	b.mu.Unlock()
	err := b.gc.Close()
	b.subs.Wait()
	return err
}

func (b *gcBus) topicOf(name string) *gcTopic {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[name]
	if !ok {
		t = &gcTopic{}
		b.topics[name] = t
	}
	return t
}

func (b *gcBus) publish(name string, msgs ...*message.Message) error {
	if b.closed.Load() {
		return fmt.Errorf("memory bus: publish to %q: %w", name, bridge.ErrBusClosed)
	}
	t := b.topicOf(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		t.seq++
		c := m.Copy()
		c.Metadata.Set(gcSeqKey, strconv.FormatUint(t.seq, 10))
		out[i] = c
	}
	if err := b.gc.Publish(name, out...); err != nil {
		return fmt.Errorf("memory bus: publish to %q: %w: %w", name, bridge.ErrBusClosed, err)
	}
	return nil
}

func (b *gcBus) subscribe(ctx context.Context, name string, work bool) (<-chan *message.Message, error) {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, fmt.Errorf("memory bus: subscribe to %q: %w", name, bridge.ErrBusClosed)
	}
	b.subs.Add(1)
	b.mu.Unlock()

	t := b.topicOf(name)
	t.mu.Lock()
	if work && t.worker {
		t.mu.Unlock()
		b.subs.Done()
		return nil, fmt.Errorf("memory bus: work topic %q already has a gcSubscriber in this process "+
			"(the memory bus has no consumer groups; subscribe to a work topic once)", name)
	}
	src, err := b.gc.Subscribe(ctx, name)
	if err != nil {
		t.mu.Unlock()
		b.subs.Done()
		return nil, fmt.Errorf("memory bus: subscribe to %q: %w: %w", name, bridge.ErrBusClosed, err)
	}
	if work {
		t.worker = true
	}
	first := t.seq + 1
	t.mu.Unlock()

	out := make(chan *message.Message)
	go b.forward(ctx, t, work, first, src, out)
	return out, nil
}

// forward passes the messages of one subscription on in sequence order,
// one at a time, until the subscription ends.
func (b *gcBus) forward(ctx context.Context, t *gcTopic, work bool, next uint64, src <-chan *message.Message, out chan<- *message.Message) {
	defer b.subs.Done()
	defer close(out)
	if work {
		// Let the topic take a new work gcSubscriber before out is closed, so
		// a consumer that sees the close can subscribe again at once.
		defer func() {
			t.mu.Lock()
			t.worker = false
			t.mu.Unlock()
		}()
	}
	early := map[uint64]*message.Message{} // arrived before their turn
	for {
		m, ok := early[next]
		if ok {
			delete(early, next)
		} else {
			var in *message.Message
			select {
			case in, ok = <-src:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			case <-b.closing:
				return
			}
			seq, err := strconv.ParseUint(in.Metadata.Get(gcSeqKey), 10, 64)
			if err != nil || seq < next {
				// Not from this gcBus's gcPublisher, or already passed on: cannot happen.
				b.log.Error("memory bus: message out of sequence dropped", "uuid", in.UUID, "seq", in.Metadata.Get(gcSeqKey), "next", next)
				in.Ack()
				continue
			}
			early[seq] = in
			continue
		}
		// m is GoChannel's copy for this subscription; its Ack and Nack go
		// straight back to GoChannel. On Nack GoChannel sends a fresh copy,
		// with the sequence number still set.
		delete(m.Metadata, gcSeqKey)
		select {
		case out <- m:
		case <-ctx.Done():
			return
		case <-b.closing:
			return
		}
		select {
		case <-m.Acked():
			next++
		case <-m.Nacked():
		case <-ctx.Done():
			return
		case <-b.closing:
			return
		}
	}
}

type gcPublisher struct{ b *gcBus }

// Publish stamps and hands the messages to GoChannel, which passes them to
// the subscriptions that exist now. It does not wait for them.
func (p gcPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs...)
}

// Close does nothing: the gcBus owns the gcPublisher (see bridge.Bus).
func (gcPublisher) Close() error { return nil }

type gcSubscriber struct {
	b    *gcBus
	work bool
}

// Subscribe returns the messages of topic published from now on, in order;
// the channel is closed when ctx ends or the gcBus is closed.
func (s gcSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.b.subscribe(ctx, topic, s.work)
}

// Close does nothing: the gcBus owns the gcSubscriber (see bridge.Bus).
func (gcSubscriber) Close() error { return nil }

var (
	_ bridge.Bus         = (*gcBus)(nil)
	_ message.Publisher  = gcPublisher{}
	_ message.Subscriber = gcSubscriber{}
)
