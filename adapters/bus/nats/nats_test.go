package nats_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	natsgo "github.com/nats-io/nats.go"

	"github.com/kefuhq/kefu/adapters/bus/nats"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/bridge/bustest"
	"github.com/kefuhq/kefu/internal/testenv"
)

// testAckWait is short, so that redelivery shows within the contract
// suite's bounds.
const testAckWait = time.Second

func TestMain(m *testing.M) {
	// Subscriptions notice a lost consumer within TestLostState's wait.
	nats.SetCheckInterval(300 * time.Millisecond)
	os.Exit(m.Run())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is one test's JetStream namespace: a stream unique to the test run,
// deleted (with its consumers) when the test ends.
type env struct {
	url    string
	stream string
	nodes  atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := testenv.NATS(t)
	e := &env{url: url, stream: fmt.Sprintf("KEFUTEST_%d_%s", time.Now().UnixNano(), strconv.FormatUint(rand.Uint64(), 36))}
	testenv.CleanNATSStream(t, url, e.stream)
	return e
}

// options returns the Options of a new node in this namespace.
func (e *env) options(node string) nats.Options {
	if node == "" {
		node = "node-" + strconv.FormatInt(e.nodes.Add(1), 10)
	}
	return nats.Options{
		URL:       e.url,
		NodeID:    node,
		Logger:    quiet(),
		Stream:    e.stream,
		AckWait:   testAckWait,
		NackDelay: 10 * time.Millisecond,
		// The server removes a dead test node's fan-out consumers soon.
		InactiveThreshold: 5 * time.Second,
	}
}

func (e *env) open(t *testing.T, o nats.Options) *nats.Bus {
	t.Helper()
	b, err := nats.New(context.Background(), o)
	if err != nil {
		t.Fatalf("nats.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestBus(t *testing.T) {
	e := newEnv(t)
	// Every Bus of one subtest is another node of the same cluster.
	bustest.Run(t, func(t *testing.T) bridge.Bus { return e.open(t, e.options("")) })
}

func TestNewValidates(t *testing.T) {
	_, err := nats.New(context.Background(), nats.Options{Stream: "a.b"})
	if err == nil {
		t.Fatal("New with bad options succeeded")
	}
	for _, want := range []string{"URL is required", "NodeID is required", `Stream "a.b"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := nats.New(context.Background(), nats.Options{URL: "nats://127.0.0.1:1", NodeID: "n"}); err == nil {
		t.Error("New with an unreachable server succeeded")
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	_ = b.Close()
	if err := b.Check(context.Background()); !errors.Is(err, bridge.ErrBusClosed) {
		t.Fatalf("Check after Close = %v, want ErrBusClosed", err)
	}
}

func receive(t *testing.T, ch <-chan *message.Message, d time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
	}
	return nil
}

func expectNothing(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s %q", m.UUID, m.Payload)
		}
	case <-time.After(d):
	}
}

// TestDeadNodeRedelivered: node A receives a work message and dies (its
// connection cut, nothing acked or nacked); node B gets it after AckWait,
// and not before.
func TestDeadNodeRedelivered(t *testing.T) {
	e := newEnv(t)
	a := e.open(t, e.options("node-a"))
	b := e.open(t, e.options("node-b"))
	const topic = "kefu.deliver.web"
	chA, err := a.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	// Publish until node A holds one (the group may hand the first to B).
	var held *message.Message
	var start time.Time
	for i := 0; held == nil && i < 20; i++ {
		if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
		select {
		case held = <-chA:
			start = time.Now()
			a.KillConnection()
		case m := <-chB:
			m.Ack()
		case <-time.After(5 * time.Second):
			t.Fatal("neither node received the message")
		}
	}
	if held == nil {
		t.Fatal("node A never got a message")
	}
	bound := testAckWait + 3*time.Second
	again := receive(t, chB, bound)
	again.Ack()
	elapsed := time.Since(start)
	if again.UUID != held.UUID {
		t.Fatalf("B got %s, want %s", again.UUID, held.UUID)
	}
	if elapsed < testAckWait-100*time.Millisecond {
		t.Errorf("redelivered after %s, before AckWait %s", elapsed, testAckWait)
	}
	t.Logf("redelivered to node B after %s (AckWait %s)", elapsed, testAckWait)
}

// TestGracefulEndReleasesAtOnce: a subscription that ends holding a work
// message gives it back, and another node gets it without waiting for
// AckWait.
func TestGracefulEndReleasesAtOnce(t *testing.T) {
	e := newEnv(t)
	o := e.options("node-a")
	o.AckWait = time.Minute
	a := e.open(t, o)
	o.NodeID = "node-b"
	b := e.open(t, o)
	const topic = "kefu.deliver.web"
	ctx, cancel := context.WithCancel(context.Background())
	chA, err := a.WorkSubscriber().Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte("kick"))
	if err := a.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	receive(t, chA, 5*time.Second)
	cancel()
	for range chA {
	}
	chB, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if got := receive(t, chB, 5*time.Second); got.UUID != sent.UUID {
		t.Fatalf("B got %s, want %s", got.UUID, sent.UUID)
	}
}

// TestSlowHandlerNotRedelivered: a live node holding a work message longer
// than AckWait keeps it (it reports progress); no other node gets it.
func TestSlowHandlerNotRedelivered(t *testing.T) {
	e := newEnv(t)
	a := e.open(t, e.options("node-a"))
	b := e.open(t, e.options("node-b"))
	const topic = "kefu.deliver.web"
	chA, err := a.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte("slow"))
	if err := a.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	m := receive(t, chA, 5*time.Second)
	chB, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	expectNothing(t, chB, 2*testAckWait+500*time.Millisecond)
	m.Ack()
	expectNothing(t, chA, 300*time.Millisecond)
	expectNothing(t, chB, 300*time.Millisecond)
}

// TestFanoutDoesNotReplay: a fan-out subscription starts after what the
// stream holds, so a restarted node does not replay history.
func TestFanoutDoesNotReplay(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const topic = "kefu.updates"
	for i := range 5 {
		if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("old"+strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := b.FanoutSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("new"))); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 5*time.Second)
	m.Ack()
	if string(m.Payload) != "new" {
		t.Fatalf("first message after subscribing = %q, want %q", m.Payload, "new")
	}
}

// TestMetadataWithNewlines: metadata values a NATS header cannot carry as
// they are (an error text in a poison reason) arrive intact.
func TestMetadataWithNewlines(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const topic = "kefu.poison"
	ch, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte("x"))
	sent.Metadata.Set("reason", "line 1\nline 2\r\n\"quoted\"")
	sent.Metadata.Set("plain", "as is")
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, 5*time.Second)
	got.Ack()
	for k, v := range sent.Metadata {
		if got.Metadata.Get(k) != v {
			t.Errorf("metadata %q = %q, want %q", k, got.Metadata.Get(k), v)
		}
	}
	if len(got.Metadata) != len(sent.Metadata) {
		t.Errorf("metadata = %v, want %v", got.Metadata, sent.Metadata)
	}
}

// TestUnreadableMessage: a message not written by a kefu publisher reaches
// the consumer marked, and does not end the subscription.
func TestUnreadableMessage(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const topic = "kefu.deliver.web"
	ch, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if _, err := js.Publish(e.stream+"."+topic, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 5*time.Second)
	if m.Metadata.Get(nats.UnreadableKey) == "" {
		t.Errorf("junk delivered without %s: %v", nats.UnreadableKey, m.Metadata)
	}
	m.Ack()
	good := message.NewMessage(watermill.NewUUID(), []byte("ok"))
	if err := b.Publisher().Publish(topic, good); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, 5*time.Second); m.UUID != good.UUID {
		t.Errorf("got %s after the junk, want %s", m.UUID, good.UUID)
	}
}

// TestStreamLimits: the stream kefu creates keeps at most MaxMsgsPerTopic
// messages per topic.
func TestStreamLimits(t *testing.T) {
	e := newEnv(t)
	o := e.options("")
	o.MaxMsgsPerTopic = 10
	b := e.open(t, o)
	msgs := make([]*message.Message, 25)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	for _, topic := range []string{"a", "b"} {
		if err := b.Publisher().Publish(topic, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := natsgo.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	info, err := js.StreamInfo(e.stream)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 20 {
		t.Errorf("stream holds %d messages, want 2 topics × 10", info.State.Msgs)
	}
	if info.Config.Storage != natsgo.FileStorage || info.Config.MaxAge != nats.DefaultMaxAge {
		t.Errorf("stream config: storage %v, max age %s", info.Config.Storage, info.Config.MaxAge)
	}
}

// TestLostState: the NATS server loses the stream (and so every consumer),
// as one restarted without its storage does. Publish makes the stream
// again, and work and fan-out subscriptions subscribe again by themselves.
func TestLostState(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const work, fanout = "kefu.deliver.web", "kefu.updates"
	wch, err := b.WorkSubscriber().Subscribe(context.Background(), work)
	if err != nil {
		t.Fatal(err)
	}
	fch, err := b.FanoutSubscriber().Subscribe(context.Background(), fanout)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if err := js.DeleteStream(e.stream); err != nil {
		t.Fatal(err)
	}
	// Publish until both subscriptions are back and receive.
	deadline := time.Now().Add(10 * time.Second)
	gotWork, gotFanout := false, false
	for !(gotWork && gotFanout) {
		if time.Now().After(deadline) {
			t.Fatalf("after the stream was lost: work received %v, fan-out received %v", gotWork, gotFanout)
		}
		for _, topic := range []string{work, fanout} {
			if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
				t.Fatalf("Publish to %s after the stream was lost: %v", topic, err)
			}
		}
		timeout := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-wch:
				m.Ack()
				gotWork = true
			case m := <-fch:
				m.Ack()
				gotFanout = true
			case <-timeout:
				break drain
			}
		}
	}
}

// TestPublishIgnoresMessageContext: a message whose context has ended (one
// received, acked and published on) is published all the same, as on the
// memory bus.
func TestPublishIgnoresMessageContext(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const topic = "kefu.deliver.web"
	ch, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.SetContext(ctx)
	if err := b.Publisher().Publish(topic, m); err != nil {
		t.Fatalf("Publish of a message with a cancelled context: %v", err)
	}
	if got := receive(t, ch, 5*time.Second); got.UUID != m.UUID {
		t.Fatalf("got %s, want %s", got.UUID, m.UUID)
	}
}

// TestWatermillUniversal runs watermill's own pub/sub suite against the
// work subscriber (the durable consumer group), in its short mode. Each
// constructor call is a new node; its subscriber's Close closes that node's
// Bus, since the suite expects closing the subscriber to end its
// subscriptions.
func TestWatermillUniversal(t *testing.T) {
	e := newEnv(t)
	group := "wm-" + strconv.FormatUint(rand.Uint64(), 36)
	newPubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		o := e.options("")
		o.Group = group
		b, err := nats.New(context.Background(), o)
		if err != nil {
			t.Fatalf("nats.New: %v", err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b.Publisher(), closingSubscriber{b.WorkSubscriber(), b}
	}
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		// Every constructor call joins one group, as kefu's nodes do: a new
		// subscriber continues where the group is, it does not replay.
		NewSubscriberReceivesOldMessages: false,
		ForceShort:                       true,
	},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, group) },
		newPubSub,
	)
}

// closingSubscriber closes its Bus when closed.
type closingSubscriber struct {
	message.Subscriber
	b *nats.Bus
}

func (c closingSubscriber) Close() error { return c.b.Close() }
