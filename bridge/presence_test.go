package bridge_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	natsbus "github.com/kefuhq/kefu/adapters/bus/nats"
	redisbus "github.com/kefuhq/kefu/adapters/bus/redis"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/internal/testenv"
)

// Cluster presence over real fan-out: the memory bus shared by several
// presences in one process, and the networked backends with one Bus per
// node. Heartbeats are short so that expiry happens within the test; the
// test waits for conditions, it never asserts how long they took.

const testHeartbeat = 50 * time.Millisecond

// cutBus is a node's view of the bus whose publishing can be cut, to play
// a node that dies without saying goodbye.
type cutBus struct {
	bridge.Bus
	cut atomic.Bool
}

func (b *cutBus) Publisher() message.Publisher { return cutPublisher{b} }

type cutPublisher struct{ b *cutBus }

func (p cutPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.b.cut.Load() {
		return errors.New("cut")
	}
	return p.b.Bus.Publisher().Publish(topic, msgs...)
}

func (p cutPublisher) Close() error { return nil }

// presenceNode is one running ClusterPresence.
type presenceNode struct {
	*bridge.ClusterPresence
	bus    *cutBus
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // what Run returned
}

// stop ends Run and waits for it.
func (n *presenceNode) stop(t *testing.T) {
	t.Helper()
	n.cancel()
	select {
	case <-n.done:
		if n.err != nil {
			t.Errorf("Run: %v", n.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}

func startPresence(t *testing.T, node string, bus bridge.Bus) *presenceNode {
	t.Helper()
	cb := &cutBus{Bus: bus}
	p, err := bridge.NewClusterPresence(bridge.PresenceConfig{Node: node, Bus: cb, Heartbeat: testHeartbeat, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &presenceNode{ClusterPresence: p, bus: cb, cancel: cancel, done: make(chan struct{})}
	go func() { n.err = p.Run(ctx); close(n.done) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

func availableOn(n *presenceNode, id int64) bool {
	ids, _ := n.Available(context.Background())
	return slices.Contains(ids, id)
}

// presenceSuite runs the cluster scenario; busFor returns node's bus.
func presenceSuite(t *testing.T, busFor func(t *testing.T, node string) bridge.Bus) {
	a := startPresence(t, "a", busFor(t, "a"))
	b := startPresence(t, "b", busFor(t, "b"))
	var mu sync.Mutex
	var woke []int64
	b.OnChange(func(id int64) { mu.Lock(); woke = append(woke, id); mu.Unlock() })

	t.Run("an agent connected on A is available on B", func(t *testing.T) {
		release := a.Connect(1)
		eventually(t, "B to see agent 1", func() bool { return availableOn(b, 1) && b.Connected(1) })
		eventually(t, "B's OnChange for agent 1", func() bool { mu.Lock(); defer mu.Unlock(); return slices.Contains(woke, 1) })
		release()
		eventually(t, "B to see agent 1 leave", func() bool { return !availableOn(b, 1) && !b.Connected(1) })
	})
	t.Run("a contact connected on A is connected on B", func(t *testing.T) {
		release := a.ConnectContact(10)
		eventually(t, "B to see contact 10", func() bool { return b.ContactConnected(10) })
		release()
		eventually(t, "B to see contact 10 leave", func() bool { return !b.ContactConnected(10) })
	})
	t.Run("flags set on one node hold on every node", func(t *testing.T) {
		b.SetOn(2, true)
		eventually(t, "A to see /on of agent 2", func() bool { return availableOn(a, 2) })
		a.SetAway(2, true)
		eventually(t, "B to see agent 2 away", func() bool { return !availableOn(b, 2) })
		b.SetAway(2, false)
		b.SetOn(2, false)
		eventually(t, "A to see agent 2 back and off", func() bool { return !availableOn(a, 2) })
	})

	a.Connect(3)
	a.ConnectContact(11)
	c := startPresence(t, "c", busFor(t, "c"))
	t.Run("a node that joins learns the cluster", func(t *testing.T) {
		eventually(t, "C to learn A's agent and contact", func() bool {
			return availableOn(c, 3) && c.ContactConnected(11) && c.Nodes() == 3
		})
	})
	t.Run("a node that stops cleanly leaves at once", func(t *testing.T) {
		c.ConnectContact(12)
		eventually(t, "B to see C's contact", func() bool { return b.ContactConnected(12) })
		c.stop(t)
		eventually(t, "B to drop C", func() bool { return !b.ContactConnected(12) && b.Nodes() == 2 })
	})
	t.Run("a node that dies expires", func(t *testing.T) {
		a.bus.cut.Store(true) // no heartbeat, no goodbye
		a.stop(t)
		eventually(t, "B to expire A", func() bool {
			return !availableOn(b, 3) && !b.ContactConnected(11) && b.Nodes() == 1
		})
	})
}

func TestClusterPresenceMemoryBus(t *testing.T) {
	bus := memory.New(quietLogger())
	t.Cleanup(func() { _ = bus.Close() })
	presenceSuite(t, func(*testing.T, string) bridge.Bus { return bus })
}

func TestClusterPresenceRedis(t *testing.T) {
	url := testenv.Redis(t)
	prefix := testenv.Name("kefutest_presence") + ":"
	testenv.CleanRedis(t, url, prefix)
	presenceSuite(t, func(t *testing.T, node string) bridge.Bus {
		b, err := redisbus.New(context.Background(), redisbus.Options{URL: url, NodeID: node, Prefix: prefix, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestClusterPresenceNATS(t *testing.T) {
	url := testenv.NATS(t)
	stream := testenv.Name("KEFUTEST_PRESENCE")
	testenv.CleanNATSStream(t, url, stream)
	presenceSuite(t, func(t *testing.T, node string) bridge.Bus {
		b, err := natsbus.New(context.Background(), natsbus.Options{URL: url, NodeID: node, Stream: stream, Logger: quietLogger(),
			InactiveThreshold: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

// Run fails when the bus goes away under it (the node then stops), and
// refuses to run twice.
func TestClusterPresenceRunEndsWithTheBus(t *testing.T) {
	bus := memory.New(quietLogger())
	p, err := bridge.NewClusterPresence(bridge.PresenceConfig{Node: "a", Bus: bus, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	// Whether Run has subscribed yet or not, a closed bus ends it.
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run returned nil after the bus closed")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the bus closed")
	}
	if err := p.Run(context.Background()); err == nil {
		t.Error("a second Run returned nil")
	}
}

// stuckBus is a bus whose publishes block, once stuck, until unstuck: a
// bus that is down and makes its callers wait.
type stuckBus struct {
	bridge.Bus
	mu        sync.Mutex
	stuck     chan struct{} // non-nil while stuck; closed to unstick
	published int
	blocked   int // publishes waiting now
}

func (b *stuckBus) Publisher() message.Publisher { return stuckPublisher{b} }

func (b *stuckBus) stick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stuck = make(chan struct{})
}

func (b *stuckBus) unstick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stuck != nil {
		close(b.stuck)
		b.stuck = nil
	}
}

func (b *stuckBus) counts() (published, blocked int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.published, b.blocked
}

type stuckPublisher struct{ b *stuckBus }

func (p stuckPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.b.mu.Lock()
	stuck := p.b.stuck
	if stuck != nil {
		p.b.blocked++
	}
	p.b.mu.Unlock()
	if stuck != nil {
		<-stuck
		p.b.mu.Lock()
		p.b.blocked--
		p.b.mu.Unlock()
	}
	p.b.mu.Lock()
	p.b.published++
	p.b.mu.Unlock()
	return p.b.Bus.Publisher().Publish(topic, msgs...)
}

func (p stuckPublisher) Close() error { return nil }

// TestClusterPresenceExpiresWhilePublishIsStuck: a node whose own publish
// blocks (its bus is down) still stops counting a dead node's sockets.
func TestClusterPresenceExpiresWhilePublishIsStuck(t *testing.T) {
	bus := memory.New(quietLogger())
	t.Cleanup(func() { _ = bus.Close() })
	clock := newFakeClock()
	sb := &stuckBus{Bus: bus}
	t.Cleanup(sb.unstick)
	p, err := bridge.NewClusterPresence(bridge.PresenceConfig{Node: "a", Bus: sb, Heartbeat: time.Second,
		Clock: clock, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		sb.unstick()
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
	// Run has subscribed once it has published its first message.
	eventually(t, "node a to start", func() bool { n, _ := sb.counts(); return n > 0 })

	// Node b (played by the test) has agent 7 connected, then dies.
	msg, err := bridge.Encode(bridge.Envelope{Kind: bridge.KindPresence, Node: "b", Presence: &bridge.PresenceState{
		Op: bridge.PresenceSnapshot, Epoch: 5, Seq: 1, EveryMS: 1000, Agents: [][2]int64{{7, 1}}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Publisher().Publish(bridge.PresenceTopic, msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node b's agent to count", func() bool { return p.Connected(7) })

	// Node a's bus goes down: its next publish blocks.
	sb.stick()
	p.Connect(1)
	eventually(t, "node a's publish to block", func() bool { _, b := sb.counts(); return b > 0 })

	// Node b stays silent: past three of its heartbeats, its agent no
	// longer counts, although node a's sender is still stuck.
	for deadline := time.Now().Add(10 * time.Second); p.Connected(7); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node b's agent still counts: expiry waited for the stuck publish")
		}
		clock.Advance(500 * time.Millisecond)
	}
	if n := p.Nodes(); n != 1 {
		t.Fatalf("Nodes = %d, want 1", n)
	}
}
