package redis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kefuhq/kefu/adapters/bus/redis"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/bridge/bustest"
	"github.com/kefuhq/kefu/internal/testenv"
)

// Test timings: short, so that reclaiming shows within the contract
// suite's bounds.
const (
	testClaimIdle     = time.Second
	testClaimInterval = 200 * time.Millisecond
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is one test's Redis namespace: a key prefix unique to the test run,
// whose keys are deleted when the test ends.
type env struct {
	url    string
	prefix string
	nodes  atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := testenv.Redis(t)
	e := &env{url: url, prefix: fmt.Sprintf("kefutest:%d:%s:", time.Now().UnixNano(), strconv.FormatUint(rand.Uint64(), 36))}
	testenv.CleanRedis(t, url, e.prefix)
	return e
}

// options returns the Options of a new node in this namespace.
func (e *env) options(node string) redis.Options {
	if node == "" {
		node = "node-" + strconv.FormatInt(e.nodes.Add(1), 10)
	}
	return redis.Options{
		URL:           e.url,
		NodeID:        node,
		Logger:        quiet(),
		Prefix:        e.prefix,
		ClaimIdle:     testClaimIdle,
		ClaimInterval: testClaimInterval,
		NackDelay:     10 * time.Millisecond,
	}
}

func (e *env) open(t *testing.T, o redis.Options) *redis.Bus {
	t.Helper()
	b, err := redis.New(context.Background(), o)
	if err != nil {
		t.Fatalf("redis.New: %v", err)
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
	_, err := redis.New(context.Background(), redis.Options{})
	if err == nil {
		t.Fatal("New with no URL and no NodeID succeeded")
	}
	for _, want := range []string{"URL is required", "NodeID is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := redis.New(context.Background(), redis.Options{URL: "redis://127.0.0.1:1/0", NodeID: "n"}); err == nil {
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

// TestNodeIDWithSpaces: a node_id Redis would refuse as a client name still
// works (it is the consumer name as it is).
func TestNodeIDWithSpaces(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options("node with spaces\t1"))
	const topic = "kefu.deliver.web"
	ch, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	if err := b.Publisher().Publish(topic, m); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, 5*time.Second).Ack()
}

// receive waits up to d for a message on ch.
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

// TestDeadNodeReclaimed: node A receives a work message and dies without
// acking it; node B gets it once it has been idle for ClaimIdle, and not
// before.
func TestDeadNodeReclaimed(t *testing.T) {
	e := newEnv(t)
	a := e.open(t, e.options("node-a"))
	b := e.open(t, e.options("node-b"))
	const topic = "kefu.deliver.web"
	chA, err := a.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte("kick"))
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, chA, 10*time.Second)
	start := time.Now()
	if err := a.Close(); err != nil { // dies holding it, never acking
		t.Fatal(err)
	}
	_ = got

	chB, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	bound := testClaimIdle + testClaimInterval + 2*time.Second
	again := receive(t, chB, bound)
	again.Ack()
	elapsed := time.Since(start)
	if again.UUID != sent.UUID {
		t.Fatalf("B got %s, want %s", again.UUID, sent.UUID)
	}
	if elapsed < testClaimIdle-50*time.Millisecond {
		t.Errorf("reclaimed after %s, before ClaimIdle %s", elapsed, testClaimIdle)
	}
	t.Logf("reclaimed by node B after %s (ClaimIdle %s, ClaimInterval %s)", elapsed, testClaimIdle, testClaimInterval)
}

// TestRestartTakesOwnPendingAtOnce: a node that restarts under the same
// node_id gets the messages it left pending without waiting for ClaimIdle.
func TestRestartTakesOwnPendingAtOnce(t *testing.T) {
	e := newEnv(t)
	o := e.options("node-a")
	o.ClaimIdle = time.Minute // far beyond the test's wait
	a := e.open(t, o)
	const topic = "kefu.deliver.web"
	ch, err := a.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := range 3 {
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		sent = append(sent, m.UUID)
		if err := a.Publisher().Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, ch, 10*time.Second) // held, never acked
	_ = a.Close()

	a2 := e.open(t, o) // the same node, restarted
	ch2, err := a2.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < len(sent) {
		m := receive(t, ch2, 5*time.Second)
		got[m.UUID] = true
		m.Ack()
	}
	for _, id := range sent {
		if !got[id] {
			t.Errorf("message %s not delivered after restart", id)
		}
	}
}

// TestFanoutDoesNotReplay: a fan-out subscription starts after the stream's
// last entry, on every node, so a restarted node does not replay history.
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
	m := receive(t, ch, 10*time.Second)
	m.Ack()
	if string(m.Payload) != "new" {
		t.Fatalf("first message after subscribing = %q, want %q", m.Payload, "new")
	}
}

// TestUnreadableEntry: an entry not written by a kefu publisher reaches the
// consumer marked, and does not end the subscription.
func TestUnreadableEntry(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, e.options(""))
	const topic = "kefu.deliver.web"
	ch, err := b.WorkSubscriber().Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := goredis.ParseURL(e.url)
	c := goredis.NewClient(opts)
	defer c.Close()
	if err := c.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + topic, Values: []any{"junk", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 10*time.Second)
	if m.Metadata.Get(redis.UnreadableKey) == "" {
		t.Errorf("junk entry delivered without %s: %v", redis.UnreadableKey, m.Metadata)
	}
	m.Ack()
	good := message.NewMessage(watermill.NewUUID(), []byte("ok"))
	if err := b.Publisher().Publish(topic, good); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, 10*time.Second); m.UUID != good.UUID {
		t.Errorf("got %s after the junk, want %s", m.UUID, good.UUID)
	}
}

// TestLostState: Redis loses the streams and their groups, as one restarted
// without persistence does. Work and fan-out subscriptions carry on by
// themselves.
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
	// Let both subscriptions start reading, then drop everything.
	for _, topic := range []string{work, fanout} {
		if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("before"))); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, wch, 5*time.Second).Ack()
	receive(t, fch, 5*time.Second).Ack()
	opts, _ := goredis.ParseURL(e.url)
	c := goredis.NewClient(opts)
	defer c.Close()
	if err := c.Del(context.Background(), e.prefix+work, e.prefix+fanout).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	gotWork, gotFanout := false, false
	for !(gotWork && gotFanout) {
		if time.Now().After(deadline) {
			t.Fatalf("after the streams were lost: work received %v, fan-out received %v", gotWork, gotFanout)
		}
		for _, topic := range []string{work, fanout} {
			if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("after"))); err != nil {
				t.Fatal(err)
			}
		}
		timeout := time.After(700 * time.Millisecond)
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

// TestMaxLen: streams are trimmed to about MaxLen entries.
func TestMaxLen(t *testing.T) {
	e := newEnv(t)
	o := e.options("")
	o.MaxLen = 100
	o.MaxLens = map[string]int64{"unbounded": -1}
	b := e.open(t, o)
	msgs := make([]*message.Message, 1000)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	opts, _ := goredis.ParseURL(e.url)
	c := goredis.NewClient(opts)
	defer c.Close()
	for _, topic := range []string{"bounded", "unbounded"} {
		if err := b.Publisher().Publish(topic, msgs...); err != nil {
			t.Fatal(err)
		}
		n, err := c.XLen(context.Background(), e.prefix+topic).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch topic {
		case "bounded":
			// MAXLEN ~ trims whole macro nodes (100 entries by default), so
			// the length stays within MaxLen plus one node.
			if n < 100 || n > 300 {
				t.Errorf("bounded stream has %d entries, want about 100", n)
			}
		case "unbounded":
			if n != 1000 {
				t.Errorf("unbounded stream has %d entries, want 1000", n)
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
// work subscriber (the consumer-group path), in its short mode. Each
// constructor call is a new node; its subscriber's Close closes that node's
// Bus, since the suite expects closing the subscriber to end its
// subscriptions.
func TestWatermillUniversal(t *testing.T) {
	e := newEnv(t)
	group := "wm-" + strconv.FormatUint(rand.Uint64(), 36)
	newPubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		o := e.options("")
		o.Group = group
		b, err := redis.New(context.Background(), o)
		if err != nil {
			t.Fatalf("redis.New: %v", err)
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
	b *redis.Bus
}

func (c closingSubscriber) Close() error { return c.b.Close() }
