package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/kefuhq/kefu/channels/telegram" // the "telegram" channel type
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/node"
)

const (
	tgToken = "123456:TEST-token_for-kefu"
	// leaseTTL is short so that the test does not wait long for a lease to
	// move, and long enough that a busy machine does not lose one.
	leaseTTL = 3 * time.Second
)

// clusterNode is one node of a test cluster, stopped on demand.
type clusterNode struct {
	*node.Node
	id   string
	stop context.CancelFunc
	done chan error
}

// startClusterNode runs a node with id on the shared PostgreSQL store dsn,
// with a Telegram channel "tg" polling api. It does not wait for anything.
func startClusterNode(t *testing.T, dsn, id string, api *telegramtest.Server) *clusterNode {
	t.Helper()
	return startNodeWith(t, dsn, id, fmt.Sprintf(`
  tg: {type: telegram, enabled: true, token: %q, mode: polling, api_base: %q, poll_timeout: 1s}`, tgToken, api.URL))
}

// startNodeWith starts a node on the PostgreSQL store dsn with these
// channels (YAML under channels:).
func startNodeWith(t *testing.T, dsn, id, channels string) *clusterNode {
	t.Helper()
	yaml := fmt.Sprintf(`
node_id: %s
store: {driver: postgres, dsn: %q}
media: {dir: %q}
log: {level: error}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:%s
`, id, dsn, filepath.Join(t.TempDir(), "media"), channels)
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln, LeaseTTL: leaseTTL,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatalf("node.New(%s): %v", id, err)
	}
	cn := &clusterNode{Node: n, id: id, stop: cancel, done: make(chan error, 1)}
	go func() { cn.done <- n.Run(ctx) }()
	t.Cleanup(func() { cn.halt(t) })
	return cn
}

// halt stops the node (a clean stop) and checks that it stopped cleanly.
func (n *clusterNode) halt(t *testing.T) {
	t.Helper()
	n.stop()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
			if err != nil {
				t.Errorf("node %s stopped with %v", n.id, err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node %s did not stop within 30 s", n.id)
	}
}

func (n *clusterNode) holds(lease string) bool { return slices.Contains(n.Leases(), lease) }

// holderOf returns the one node that holds lease, or nil when none or
// both do.
func holderOf(lease string, nodes ...*clusterNode) *clusterNode {
	var h *clusterNode
	for _, n := range nodes {
		if n.holds(lease) {
			if h != nil {
				return nil
			}
			h = n
		}
	}
	return h
}

// TestLeasedWorkRunsOnOneNode: two nodes on one PostgreSQL store, with a
// Telegram bot in polling mode (Telegram answers a second poller with 409)
// and its outbox. One node polls and delivers; when it stops, the other
// takes both over, and the customer's messages and the agent's replies go
// through both before and after.
func TestLeasedWorkRunsOnOneNode(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	api := telegramtest.New(tgToken)
	t.Cleanup(api.Close)
	a := startClusterNode(t, dsn, "kefu-a", api)
	b := startClusterNode(t, dsn, "kefu-b", api)
	nodes := []*clusterNode{a, b}
	for _, lease := range []string{"run.tg", "deliver.tg"} {
		waitFor(t, "one node to hold "+lease, func() bool { return holderOf(lease, nodes...) != nil })
	}
	// The web channel's loop is not exclusive: it runs on every node,
	// under no lease.
	for _, n := range nodes {
		for _, l := range n.Leases() {
			if !strings.HasPrefix(l, "run.tg") && !strings.HasPrefix(l, "deliver.tg") && l != "node."+n.id {
				t.Errorf("node %s holds the unexpected lease %s", n.id, l)
			}
		}
	}

	ctx := context.Background()
	via := a // the node whose service the test uses
	alice, err := via.Service().Store().AgentByEmail(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	// A customer writes and an agent answers; the message and the reply
	// go through whichever nodes hold the leases.
	exchange := func(chat int64, text, reply string) {
		t.Helper()
		api.AddUpdate(telegramtest.Update(telegramtest.Text(chat, text)))
		var conv core.Conversation
		waitFor(t, "the customer's message stored", func() bool {
			cs, err := via.Service().Store().Conversations(ctx, core.ConversationFilter{Channel: "tg", ExternalID: fmt.Sprint(chat)})
			if err != nil || len(cs) != 1 {
				return false
			}
			conv = cs[0]
			return conv.LastSeq >= 1
		})
		if _, err := via.Service().Take(ctx, alice.ID, conv.ID); err != nil {
			t.Fatal(err)
		}
		before := len(api.Sent())
		if _, err := via.Service().Reply(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: reply}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reply delivered", func() bool {
			for _, c := range api.Sent()[before:] {
				if c.ChatID == chat && c.Fields["text"] == reply {
					return true
				}
			}
			return false
		})
	}
	exchange(42, "Hello, my order is late", "Let me check.")

	// With both nodes up, only one polled: Telegram never had to refuse a
	// second poller.
	for _, c := range api.Calls("getUpdates") {
		if c.ErrorCode != 0 {
			t.Fatalf("getUpdates answered %d: two nodes polled at once", c.ErrorCode)
		}
	}
	if len(api.Calls("getUpdates")) == 0 {
		t.Fatal("no node polled")
	}

	// The poller's node stops cleanly: it releases its leases, and the
	// other node takes the work over without waiting for them to expire.
	gone := holderOf("run.tg", nodes...)
	stay := a
	if gone == a {
		stay = b
	}
	gone.halt(t)
	for _, lease := range []string{"run.tg", "deliver.tg"} {
		waitFor(t, "node "+stay.id+" to take "+lease+" over", func() bool { return stay.holds(lease) })
	}
	via = stay
	exchange(43, "Is anyone there?", "Yes, here.")
}

// TestDuplicateNodeIDRefused: a node started with the node_id of a running
// node on the same store stops with an error naming it, rather than run
// the cluster's work twice.
func TestDuplicateNodeIDRefused(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	api := telegramtest.New(tgToken)
	t.Cleanup(api.Close)
	first := startClusterNode(t, dsn, "kefu-a", api)
	waitFor(t, "the first node to claim its node_id", func() bool { return first.holds("node.kefu-a") })

	second := startClusterNode(t, dsn, "kefu-a", api)
	wantRefused(t, second)
	if !first.holds("run.tg") || !first.holds("node.kefu-a") {
		t.Fatalf("the first node lost its leases: %v", first.Leases())
	}
}

// TestDuplicateNodeIDRefusedWithoutLeasedWork: the same on a cluster that
// serves the web channel only, which has no leased work: the node_id is
// claimed all the same (a duplicate would take over the first node's
// place in presence, and routing would lose its agents).
func TestDuplicateNodeIDRefusedWithoutLeasedWork(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	first := startNodeWith(t, dsn, "kefu-a", "\n  web: {enabled: true}")
	waitFor(t, "the first node to claim its node_id", func() bool { return first.holds("node.kefu-a") })
	wantRefused(t, startNodeWith(t, dsn, "kefu-a", "\n  web: {enabled: true}"))
	if !first.holds("node.kefu-a") {
		t.Fatalf("the first node lost its claim: %v", first.Leases())
	}
}

// wantRefused waits for second to stop with the node_id-in-use error.
func wantRefused(t *testing.T, second *clusterNode) {
	t.Helper()
	select {
	case err := <-second.done:
		close(second.done)
		if err == nil || !strings.Contains(err.Error(), `node_id "kefu-a" is in use by another running kefu node`) {
			t.Fatalf("second node stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the second node with the same node_id kept running")
	}
	if len(second.Leases()) != 0 {
		t.Fatalf("the refused node held %v", second.Leases())
	}
}
