// Package bustest is the contract suite every bridge.Bus backend runs, in
// the spirit of watermill's pubsub/tests: a backend's test calls Run with a
// constructor, and the suite checks the bridge.Bus contract, gated on what
// the backend's Features say it guarantees.
//
//	func TestBus(t *testing.T) {
//		bustest.Run(t, func(t *testing.T) bridge.Bus { return memory.New(nil) })
//	}
package bustest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/bridge"
)

// Bounds the suite waits for. They are limits for failing, not timing
// assertions: a healthy backend answers in milliseconds.
const (
	// receiveTimeout bounds the wait for a message that must arrive.
	receiveTimeout = 10 * time.Second
	// quietPeriod is how long the suite watches for a message that must not
	// arrive (a duplicate).
	quietPeriod = 250 * time.Millisecond
)

// Run runs the contract suite. newBus returns a new Bus; for a networked
// backend, every Bus it returns within one top-level test must reach the
// same backend, as the nodes of one cluster do (the suite uses two to check
// consumer groups). The suite closes each Bus it gets when the subtest ends;
// Close is idempotent, so newBus may register a cleanup of its own. Topic
// names are unique per run, so runs may share a server.
func Run(t *testing.T, newBus func(t *testing.T) bridge.Bus) {
	t.Helper()
	s := &suite{newBus: newBus, run: strconv.FormatUint(rand.Uint64()%1e9, 36)}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"RoundTrip", s.testRoundTrip},
		{"FanOutReachesEverySubscription", s.testFanOut},
		{"WorkTopicDeliversOnce", s.testWorkOnce},
		{"WorkTopicConsumerGroup", s.testConsumerGroup},
		{"NackRedelivers", s.testNack},
		{"OrderPerTopic", s.testOrder},
		{"ConcurrentPublishers", s.testConcurrentPublishers},
		{"PublishBeforeSubscribe", s.testPublishBeforeSubscribe},
		{"RedeliversUnacked", s.testRedeliversUnacked},
		{"ContextCancelEndsSubscription", s.testContextCancel},
		{"CloseEndsSubscriptions", s.testClose},
		{"RouterCloseLeavesBusOpen", s.testRouterClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	newBus func(t *testing.T) bridge.Bus
	run    string
}

func (s *suite) bus(t *testing.T) bridge.Bus {
	t.Helper()
	b := s.newBus(t)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

var unsafeTopic = regexp.MustCompile(`[^a-z0-9_-]+`)

// topic returns a topic name unique to this run and subtest.
func (s *suite) topic(t *testing.T, suffix string) string {
	name := unsafeTopic.ReplaceAllString(strings.ToLower(t.Name()), "_")
	return fmt.Sprintf("bustest.%s.%s.%s", s.run, name, suffix)
}

// kind is a subscription kind: work or fan-out.
type kind struct {
	name string
	sub  func(bridge.Bus) message.Subscriber
}

var kinds = []kind{
	{"work", func(b bridge.Bus) message.Subscriber { return b.WorkSubscriber() }},
	{"fanout", func(b bridge.Bus) message.Subscriber { return b.FanoutSubscriber() }},
}

func subscribe(t *testing.T, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return ch
}

func newMessage(i int) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
	m.Metadata.Set("i", strconv.Itoa(i))
	return m
}

// publishN publishes n messages (payload and metadata "i" = 0…n-1) one by
// one and returns them.
func publishN(t *testing.T, pub message.Publisher, topic string, n int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range n {
		msgs[i] = newMessage(i)
		if err := pub.Publish(topic, msgs[i]); err != nil {
			t.Fatalf("Publish(%q) #%d: %v", topic, i, err)
		}
	}
	return msgs
}

// receive returns the next message of ch, acked unless ack is false.
func receive(t *testing.T, ch <-chan *message.Message, ack bool) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed while a message was expected")
		}
		if ack {
			m.Ack()
		}
		return m
	case <-time.After(receiveTimeout):
		t.Fatalf("no message within %s", receiveTimeout)
	}
	return nil
}

// receiveN receives and acks n messages and returns their "i" values in
// arrival order.
func receiveN(t *testing.T, ch <-chan *message.Message, n int) []int {
	t.Helper()
	got := make([]int, 0, n)
	for range n {
		got = append(got, index(t, receive(t, ch, true)))
	}
	return got
}

func index(t *testing.T, m *message.Message) int {
	t.Helper()
	i, err := strconv.Atoi(string(m.Payload))
	if err != nil {
		t.Fatalf("unexpected payload %q", m.Payload)
	}
	return i
}

// expectNothing fails if ch delivers a message within quietPeriod.
func expectNothing(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			m.Ack()
			t.Fatalf("unexpected message %q (a duplicate?)", m.Payload)
		}
	case <-time.After(quietPeriod):
	}
}

// expectClosed fails unless ch is closed within receiveTimeout. Messages
// still buffered are acked and skipped.
func expectClosed(t *testing.T, ch <-chan *message.Message, what string) {
	t.Helper()
	deadline := time.After(receiveTimeout)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return
			}
			m.Ack()
		case <-deadline:
			t.Fatalf("%s: subscription not closed within %s", what, receiveTimeout)
		}
	}
}

func checkAll(t *testing.T, who string, got []int, n int) {
	t.Helper()
	seen := make(map[int]int, n)
	for _, i := range got {
		seen[i]++
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("%s: message %d received %d times", who, i, seen[i])
		}
	}
}

func (s *suite) testRoundTrip(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b := s.bus(t)
			topic := s.topic(t, "t")
			ch := subscribe(t, k.sub(b), topic)
			payload := []byte("{\"v\":1}\x00\xff héllo")
			sent := message.NewMessage(watermill.NewUUID(), payload)
			sent.Metadata.Set("correlation_id", "c-1")
			sent.Metadata.Set("kefu_kind", "updates")
			if err := b.Publisher().Publish(topic, sent); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			got := receive(t, ch, true)
			if got.UUID != sent.UUID {
				t.Errorf("UUID = %q, want %q", got.UUID, sent.UUID)
			}
			if string(got.Payload) != string(payload) {
				t.Errorf("payload = %q, want %q", got.Payload, payload)
			}
			for key, v := range sent.Metadata {
				if got.Metadata.Get(key) != v {
					t.Errorf("metadata %q = %q, want %q", key, got.Metadata.Get(key), v)
				}
			}
		})
	}
}

func (s *suite) testFanOut(t *testing.T) {
	const n = 20
	b := s.bus(t)
	topic := s.topic(t, "t")
	subs := map[string]<-chan *message.Message{
		"subscription 1": subscribe(t, b.FanoutSubscriber(), topic),
		"subscription 2": subscribe(t, b.FanoutSubscriber(), topic),
	}
	if b.Features().ConsumerGroups {
		// A cluster backend: another node's subscription gets everything too.
		subs["another node"] = subscribe(t, s.bus(t).FanoutSubscriber(), topic)
	}
	publishN(t, b.Publisher(), topic, n)
	var wg sync.WaitGroup
	for who, ch := range subs {
		wg.Go(func() {
			got := make([]int, 0, n)
			for range n {
				select {
				case m, ok := <-ch:
					if !ok {
						t.Errorf("%s: closed after %d messages", who, len(got))
						return
					}
					m.Ack()
					i, _ := strconv.Atoi(string(m.Payload))
					got = append(got, i)
				case <-time.After(receiveTimeout):
					t.Errorf("%s: got %d of %d messages", who, len(got), n)
					return
				}
			}
			checkAll(t, who, got, n)
		})
	}
	wg.Wait()
}

func (s *suite) testWorkOnce(t *testing.T) {
	const n = 20
	b := s.bus(t)
	topic := s.topic(t, "t")
	ch := subscribe(t, b.WorkSubscriber(), topic)
	publishN(t, b.Publisher(), topic, n)
	checkAll(t, "work subscription", receiveN(t, ch, n), n)
	expectNothing(t, ch)
}

func (s *suite) testConsumerGroup(t *testing.T) {
	b1 := s.bus(t)
	if !b1.Features().ConsumerGroups {
		t.Skip("backend has no consumer groups: one process is the whole cluster and subscribes to a work topic once")
	}
	const n = 50
	b2 := s.bus(t)
	topic := s.topic(t, "t")
	ch1 := subscribe(t, b1.WorkSubscriber(), topic)
	ch2 := subscribe(t, b2.WorkSubscriber(), topic)
	publishN(t, b1.Publisher(), topic, n)

	var got []int
	per := map[string]int{}
	deadline := time.After(receiveTimeout)
	for len(got) < n {
		var m *message.Message
		var who string
		select {
		case m = <-ch1:
			who = "node 1"
		case m = <-ch2:
			who = "node 2"
		case <-deadline:
			t.Fatalf("got %d of %d messages between the two nodes", len(got), n)
		}
		if m == nil {
			t.Fatalf("%s: subscription closed", who)
		}
		m.Ack()
		got = append(got, index(t, m))
		per[who]++
	}
	checkAll(t, "the cluster", got, n)
	expectNothing(t, ch1)
	expectNothing(t, ch2)
	t.Logf("split between nodes: %v", per)
}

func (s *suite) testNack(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b := s.bus(t)
			topic := s.topic(t, "t")
			ch := subscribe(t, k.sub(b), topic)
			sent := publishN(t, b.Publisher(), topic, 1)[0]
			first := receive(t, ch, false)
			first.Nack()
			again := receive(t, ch, true)
			if again.UUID != sent.UUID || string(again.Payload) != string(sent.Payload) {
				t.Errorf("after Nack got %s %q, want the same message %s %q", again.UUID, again.Payload, sent.UUID, sent.Payload)
			}
			expectNothing(t, ch)
		})
	}
}

func (s *suite) testOrder(t *testing.T) {
	b := s.bus(t)
	if !b.Features().OrderedPerTopic {
		t.Skip("backend does not keep order per topic")
	}
	const n = 300
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			topic := s.topic(t, "t")
			ch := subscribe(t, k.sub(b), topic)
			publishN(t, b.Publisher(), topic, n)
			got := receiveN(t, ch, n)
			for i, v := range got {
				if v != i {
					t.Fatalf("message #%d is %d; order: %v", i, v, got)
				}
			}
		})
	}
}

func (s *suite) testConcurrentPublishers(t *testing.T) {
	const publishers, each = 8, 50
	b := s.bus(t)
	topic := s.topic(t, "t")
	ch := subscribe(t, b.FanoutSubscriber(), topic)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := b.Publisher().Publish(topic, newMessage(p*each+i)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	got := receiveN(t, ch, publishers*each)
	wg.Wait()
	checkAll(t, "subscription", got, publishers*each)
	if b.Features().OrderedPerTopic {
		// Each publisher's own messages stay in its order.
		last := map[int]int{}
		for _, v := range got {
			p := v / each
			if prev, ok := last[p]; ok && v < prev {
				t.Errorf("publisher %d: %d arrived after %d", p, v, prev)
			}
			last[p] = v
		}
	}
}

func (s *suite) testPublishBeforeSubscribe(t *testing.T) {
	b := s.bus(t)
	topic := s.topic(t, "t")
	// Nobody subscribes yet: Publish must neither fail nor block.
	early := newMessage(0)
	if err := b.Publisher().Publish(topic, early); err != nil {
		t.Fatalf("Publish with no subscription: %v", err)
	}
	ch := subscribe(t, b.WorkSubscriber(), topic)
	if err := b.Publisher().Publish(topic, newMessage(1)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	var got []int
	for {
		i := index(t, receive(t, ch, true))
		got = append(got, i)
		if i == 1 {
			break
		}
	}
	if b.Features().Persistent {
		checkAll(t, "subscription made after the first publish", got, 2)
		return
	}
	t.Logf("not persistent: received %v (the early message may be dropped)", got)
}

func (s *suite) testRedeliversUnacked(t *testing.T) {
	b := s.bus(t)
	if !b.Features().RedeliversUnacked {
		t.Skip("backend drops a message left unacked when its subscription ends")
	}
	topic := s.topic(t, "t")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.WorkSubscriber().Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	sent := publishN(t, b.Publisher(), topic, 1)[0]
	_ = receive(t, ch, false) // the node "dies" holding it
	cancel()
	expectClosed(t, ch, "after cancel")

	ch2 := subscribe(t, s.bus(t).WorkSubscriber(), topic)
	got := receive(t, ch2, true)
	if got.UUID != sent.UUID {
		t.Errorf("redelivered %s, want %s", got.UUID, sent.UUID)
	}
}

func (s *suite) testContextCancel(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b := s.bus(t)
			ctx, cancel := context.WithCancel(context.Background())
			ch, err := k.sub(b).Subscribe(ctx, s.topic(t, "t"))
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			cancel()
			expectClosed(t, ch, "after cancel")
		})
	}
}

func (s *suite) testClose(t *testing.T) {
	b := s.bus(t)
	topic := s.topic(t, "t")
	work := subscribe(t, b.WorkSubscriber(), topic+".work")
	fanout := subscribe(t, b.FanoutSubscriber(), topic+".fanout")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	expectClosed(t, work, "work subscription")
	expectClosed(t, fanout, "fan-out subscription")
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Publisher().Publish(topic, newMessage(0)); !errors.Is(err, bridge.ErrBusClosed) {
		t.Errorf("Publish after Close = %v, want an error wrapping ErrBusClosed", err)
	}
	for _, k := range kinds {
		if _, err := k.sub(b).Subscribe(context.Background(), topic); !errors.Is(err, bridge.ErrBusClosed) {
			t.Errorf("%s Subscribe after Close = %v, want an error wrapping ErrBusClosed", k.name, err)
		}
	}
}

// testRouterClose checks that the Bus owns its publisher and subscribers: a
// watermill Router closes those of its handlers when it stops, and the Bus
// must stay usable for everyone else.
func (s *suite) testRouterClose(t *testing.T) {
	b := s.bus(t)
	topic := s.topic(t, "t")
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: receiveTimeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 1)
	r.AddConsumerHandler("bustest", topic, b.FanoutSubscriber(), func(m *message.Message) error {
		handled <- string(m.Payload)
		return nil
	})
	r.AddHandler("bustest-out", topic+".in", b.WorkSubscriber(), topic+".out", b.Publisher(),
		message.PassthroughHandler)
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(context.Background()) }()
	select {
	case <-r.Running():
	case <-time.After(receiveTimeout):
		t.Fatal("router did not start")
	}
	publishN(t, b.Publisher(), topic, 1)
	select {
	case <-handled:
	case <-time.After(receiveTimeout):
		t.Fatal("router handler got nothing")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("router Close: %v", err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("router Run: %v", err)
	}
	// Direct Close calls are no-ops too.
	for _, c := range []interface{ Close() error }{b.Publisher(), b.WorkSubscriber(), b.FanoutSubscriber()} {
		if err := c.Close(); err != nil {
			t.Errorf("Close on a part of the Bus: %v", err)
		}
	}
	for _, k := range kinds {
		ch := subscribe(t, k.sub(b), topic+"."+k.name)
		publishN(t, b.Publisher(), topic+"."+k.name, 1)
		if got := index(t, receive(t, ch, true)); got != 0 {
			t.Errorf("%s: got %d after the router closed", k.name, got)
		}
	}
}
