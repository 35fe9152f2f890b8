package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/kefuhq/kefu/channels/web" // the "web" channel type
	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/node/nodetest"
	goredis "github.com/redis/go-redis/v9"
)

// Two nodes on one PostgreSQL and one Redis: a visitor's conversation that
// arrives at node A goes to an agent whose console is connected to node B,
// and a conversation that waited is routed when an agent connects anywhere.
func TestPresenceAcrossNodes(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	redisURL := testenv.Redis(t)
	ns := testenv.Name("presence")
	testenv.CleanRedis(t, redisURL, ns+":") // runs after the nodes stop
	const origin = "https://shop.example.com"
	yaml := func(node string) string {
		return fmt.Sprintf(`
node_id: %s
store: {driver: postgres, dsn: %q}
bus: {driver: redis, url: %q, namespace: %s}
routing: {strategy: least_busy, offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  web: {enabled: true, allowed_origins: [%q]}
`, node, dsn, redisURL, ns, origin)
	}
	a := nodetest.Start(t, yaml("node-a"))
	b := nodetest.Start(t, yaml("node-b"))
	ctx := context.Background()
	alice := a.Agent(t, "alice@example.com")
	onA, onB := &webtest.Client{Base: a.URL, Origin: origin}, &webtest.Client{Base: b.URL, Origin: origin}

	metric := func(n *nodetest.Node) string { return scrape(t, n.URL, "kefu_presence_nodes") }
	waitFor(t, "both nodes to count each other", func() bool { return metric(a) == "2" && metric(b) == "2" })
	// They did so through bus.namespace's streams.
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rc := goredis.NewClient(opts)
	defer rc.Close()
	if n, err := rc.Exists(ctx, ns+":kefu.presence").Result(); err != nil || n != 1 {
		t.Fatalf("stream %s:kefu.presence: exists %d, %v (bus.namespace not applied?)", ns, n, err)
	}

	// A visitor writes to node A while nobody is available: it waits.
	vs, err := onA.StartSession(ctx, webtest.SessionRequest{Name: "Early"})
	if err != nil {
		t.Fatal(err)
	}
	early := &webtest.Poller{Client: onA, Token: vs.Token}
	ack, err := early.SendText(ctx, "e-1", 0, "anyone there?", false)
	if err != nil {
		t.Fatal(err)
	}
	waiting := ack.Message.ConversationID

	// Alice opens her console on node B: the waiting conversation is hers.
	tok, err := onB.Login(ctx, "alice@example.com", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	console, err := onB.DialAgent(ctx, tok, nil, false, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	if _, _, err := console.Sync(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	assignee := func(conv int64) int64 {
		c, err := a.Service().Store().Conversation(ctx, conv)
		if err != nil {
			t.Fatal(err)
		}
		return c.AssigneeID
	}
	waitFor(t, "the waiting conversation assigned to alice", func() bool { return assignee(waiting) == alice.ID })

	// Node A sees her as available; a new visitor on node A is routed to
	// her, and she sees the message on node B.
	waitFor(t, "node A to see alice's console on node B", func() bool {
		ids, _ := a.Service().Presence().Available(ctx)
		return len(ids) == 1 && ids[0] == alice.ID && a.Service().Presence().Connected(alice.ID)
	})
	vs2, err := onA.StartSession(ctx, webtest.SessionRequest{Name: "Later"})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := onA.DialVisitor(ctx, vs2.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	if _, _, err := vc.Sync(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := vc.SendText("l-1", 0, "hello from node A", false); err != nil {
		t.Fatal(err)
	}
	ack2, err := vc.Ack("l-1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conv := ack2.Message.ConversationID
	waitFor(t, "the new conversation assigned to alice", func() bool { return assignee(conv) == alice.ID })
	if _, err := console.WaitFor(10*time.Second, func(f webtest.Frame) bool {
		return f.Type == "message" && f.Message.ConversationID == conv && f.Message.Text == "hello from node A"
	}); err != nil {
		t.Fatalf("alice's console on node B: %v", err)
	}

	// The visitor's socket on node A counts for their contact on node B.
	c, err := b.Service().Store().Conversation(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node B to see the visitor's socket on node A", func() bool { return b.Service().Presence().ContactConnected(c.ContactID) })
	vc.Close()
	waitFor(t, "node B to see it close", func() bool { return !b.Service().Presence().ContactConnected(c.ContactID) })

	// Her console closes: node A no longer routes to her.
	console.Close()
	waitFor(t, "node A to see alice leave", func() bool { return !a.Service().Presence().Connected(alice.ID) })
}

// scrape returns the value of an unlabelled metric on a node's /metrics.
func scrape(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// An agent's /on and away are saved: a node that starts later (here a
// second one on the same PostgreSQL, with presence of its own) routes as
// the agents left it, before anyone connects or says anything.
func TestOnAndAwayOutlastTheNode(t *testing.T) {
	yaml := fmt.Sprintf(`
store: {driver: postgres, dsn: %q}
routing: {offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
  - {email: bob@example.com, name: Bob, password: bob-password}
`, testenv.PostgresSchema(t))
	a := nodetest.Start(t, yaml)
	ctx := context.Background()
	alice, bob := a.Agent(t, "alice@example.com"), a.Agent(t, "bob@example.com")
	if err := a.Service().SetOn(ctx, alice.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := a.Service().SetOn(ctx, bob.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := a.Service().SetAway(ctx, bob.ID, true); err != nil {
		t.Fatal(err)
	}

	b := nodetest.Start(t, yaml)
	if ids, err := b.Service().Presence().Available(ctx); err != nil || len(ids) != 1 || ids[0] != alice.ID {
		t.Fatalf("the later node's available agents: %v, %v; want only Alice (%d)", ids, err, alice.ID)
	}
}
