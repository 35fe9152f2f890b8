package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/channels/webhook"
	"github.com/kefuhq/kefu/channels/webhook/webhooktest"
	"github.com/kefuhq/kefu/internal/testenv"
	natsgo "github.com/nats-io/nats.go"
)

// TestCluster runs three kefu processes on one PostgreSQL schema and one bus
// (Redis Streams, then NATS JetStream), with visitors and agents spread over
// the nodes and webhook customers posting to random nodes; agents answer
// every customer message. Mid-traffic it kills, with SIGKILL, the node that
// holds the webhook channel's delivery lease; that node's clients reconnect
// to the others and resume. Then it checks that every acknowledged message
// reached every agent exactly once and in order, every acknowledged reply
// reached its visitor exactly once and in order (and every webhook reply its
// receiver), no conversation was assigned twice, no agent holds more than
// max_open_per_agent, and the lease moved to a live node.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three kefu processes")
	}
	pg := testenv.PostgresSchema(t)
	redisURL := testenv.Redis(t)
	natsURL := testenv.NATS(t)
	bin := buildKefu(t)
	t.Run("redis", func(t *testing.T) { runCluster(t, bin, pg, "redis", redisURL) })
	t.Run("nats", func(t *testing.T) { runCluster(t, bin, testenv.PostgresSchema(t), "nats", natsURL) })
}

const (
	clusterNodes    = 3
	clusterAgents   = 3 // one per node at the start
	clusterVisitors = 6 // two per node at the start
	clusterHooks    = 6 // webhook customers, each posting to random nodes
	clusterMaxOpen  = 5
	clusterSecret   = "cluster-test-secret"
	clusterPassword = "cluster-password-1"
)

// clusterNode is one kefu process of the test cluster.
type clusterNode struct {
	id   string
	base string
	cmd  *exec.Cmd
	dead atomic.Bool
}

// cluster is the running test cluster and what its clients saw.
type cluster struct {
	t     *testing.T
	nodes []*clusterNode
	rcv   *webhooktest.Receiver

	mu sync.Mutex
	// acked: the text of every customer message the cluster acknowledged.
	acked map[string]bool
	// replies: message id → conversation of every acknowledged agent reply.
	replies map[int64]int64
	// hookReplies: message ids of acknowledged replies to webhook customers.
	hookReplies map[int64]bool
	// visitorConv: conversation → visitor index.
	visitorConv map[int64]int
	errs        []string
}

func (c *cluster) errorf(format string, args ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// live returns a node that is not killed, preferring the i-th.
func (c *cluster) live(i int) *clusterNode {
	for k := range c.nodes {
		if n := c.nodes[(i+k)%len(c.nodes)]; !n.dead.Load() {
			return n
		}
	}
	c.t.Fatal("no live node")
	return nil
}

func runCluster(t *testing.T, bin, pg, driver, busURL string) {
	dir := t.TempDir()
	rcv := webhooktest.NewReceiver(clusterSecret)
	defer rcv.Close()
	ns := testenv.Name("kefutest")
	if driver == "redis" {
		testenv.CleanRedis(t, busURL, ns+":")
	} else {
		testenv.CleanNATSStream(t, busURL, ns)
	}

	c := &cluster{t: t, rcv: rcv, acked: map[string]bool{}, replies: map[int64]int64{}, hookReplies: map[int64]bool{}, visitorConv: map[int64]int{}}
	var agents strings.Builder
	for a := range clusterAgents {
		fmt.Fprintf(&agents, "  - {email: agent%d@example.com, name: Agent%d, role: agent, password: %s}\n", a, a, clusterPassword)
	}
	for i := range clusterNodes {
		n := &clusterNode{id: fmt.Sprintf("node%d", i+1)}
		addr := freeAddr(t)
		n.base = "http://" + addr
		cfg := filepath.Join(dir, n.id+".yaml")
		writeFile(t, cfg, fmt.Sprintf(`
node_id: %s
server: {addr: %q}
store: {driver: postgres, dsn: %q}
bus: {driver: %s, url: %q, namespace: %s}
media: {dir: %q}
log: {level: warn}
routing: {offline_reply: "", max_open_per_agent: %d}
agents:
%s
channels:
  web:
    enabled: true
    limits: {requests_per_minute: 1000000, messages_per_minute: 1000000, conversations_per_hour: 1000000}
  crm: {type: webhook, enabled: true, secret: %q, deliver_url: %q, timeout: 10s}
`, n.id, addr, pg, driver, busURL, ns, filepath.Join(dir, n.id+"-media"), clusterMaxOpen, agents.String(), clusterSecret, rcv.URL))
		// The first node creates the schema and the agents; the others
		// start once it is ready.
		n.cmd = startKefu(t, bin, cfg, n.base)
		c.nodes = append(c.nodes, n)
	}
	if driver == "nats" { // the nodes share bus.namespace's stream
		nc, err := natsgo.Connect(busURL)
		if err != nil {
			t.Fatal(err)
		}
		js, err := nc.JetStream()
		if err == nil {
			_, err = js.StreamInfo(ns)
		}
		nc.Close()
		if err != nil {
			t.Fatalf("stream %s (bus.namespace): %v", ns, err)
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var clients sync.WaitGroup
	agentSeen := make([]*agentLog, clusterAgents)
	for a := range clusterAgents {
		agentSeen[a] = &agentLog{count: map[string]int{}, ids: map[int64]int{}, lastSeq: map[int64]int64{}, assigned: map[int64]map[int64]bool{}, assignee: map[int64]int64{}}
		clients.Add(1)
		go func() { defer clients.Done(); c.runAgent(ctx, a, agentSeen[a]) }()
	}
	// Agents connect before customers write, so that conversations are
	// assigned rather than queued.
	waitUntil(t, 20*time.Second, "agents connected", func() bool {
		for _, l := range agentSeen {
			if !l.connected.Load() {
				return false
			}
		}
		return true
	})

	sending, stopSending := context.WithCancel(ctx)
	visitorSeen := make([]*visitorLog, clusterVisitors)
	var senders sync.WaitGroup
	for v := range clusterVisitors {
		visitorSeen[v] = &visitorLog{ids: map[int64]int{}}
		clients.Add(1) // visitors go on reading replies after sending stops
		go func() { defer clients.Done(); c.runVisitor(sending, ctx, v, visitorSeen[v]) }()
	}
	for h := range clusterHooks {
		senders.Add(1)
		go func() { defer senders.Done(); c.runHookCustomer(sending, h) }()
	}

	// Let traffic flow, then kill the delivery lease's holder.
	waitUntil(t, 30*time.Second, "traffic before the kill", func() bool { return c.ackedCount() >= 60 })
	holder := c.leaseHolder("deliver.crm")
	if holder == nil {
		// Go on to check the rest with another node killed.
		t.Error("no node reports holding the lease deliver.crm (kefu_lease_held)")
		holder = c.nodes[1]
	}
	before := c.ackedCount()
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	holder.dead.Store(true)
	_ = holder.cmd.Wait()
	t.Logf("%s: killed %s (holder of deliver.crm) after %d acknowledged customer messages", driver, holder.id, before)

	waitUntil(t, 60*time.Second, "traffic after the kill", func() bool { return c.ackedCount() >= before+60 })
	stopSending()
	senders.Wait()

	// Everything acknowledged must arrive; wait for it, bounded.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && !c.settled(agentSeen, visitorSeen) {
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	clients.Wait()

	if n := c.leaseHolder("deliver.crm"); n == nil || n == holder {
		t.Errorf("the lease deliver.crm did not move to a live node (holder now: %v)", n)
	}
	c.check(agentSeen, visitorSeen)
}

// agentLog is what one agent's connections (across reconnections) saw.
type agentLog struct {
	connected atomic.Bool
	mu        sync.Mutex
	count     map[string]int           // customer message text → times received
	ids       map[int64]int            // message id → times received
	lastSeq   map[int64]int64          // conversation → highest seq received
	disorder  []string                 // seqs that went backwards
	assigned  map[int64]map[int64]bool // conversation → ids of "assigned" events
	assignee  map[int64]int64          // conversation → assignee, as last seen
}

// visitorLog is what one visitor's connections saw of agents' replies.
type visitorLog struct {
	mu       sync.Mutex
	conv     int64
	ids      map[int64]int // reply message id → times received
	lastSeq  int64
	disorder []string
}

func (c *cluster) runAgent(ctx context.Context, a int, log *agentLog) {
	email := fmt.Sprintf("agent%d@example.com", a)
	var cursor *int64
	pending := map[string]string{} // client id → text of replies not yet acked
	for ctx.Err() == nil {
		n := c.live(a)
		wc := &webtest.Client{Base: n.base}
		tok, err := wc.Login(ctx, email, clusterPassword)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cn, err := wc.DialAgent(ctx, tok, cursor, false, webtest.DialOptions{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		replay, synced, err := cn.Sync(10 * time.Second)
		if err != nil {
			cn.Close()
			continue
		}
		if cursor == nil && synced.Cursor != nil {
			v := *synced.Cursor
			cursor = &v
		}
		me := int64(0)
		if cn.Welcome.Agent != nil {
			me = cn.Welcome.Agent.ID
		}
		log.connected.Store(true)
		// Replies sent before a reconnection but never acked go again,
		// under the same client id: stored once either way.
		for id, text := range pending {
			_ = cn.SendText(id, convOfReply(id), text, false)
		}
		frames := replay
		for ctx.Err() == nil {
			for _, f := range frames {
				c.agentFrame(cn, me, log, f, &cursor, pending)
			}
			frames = frames[:0]
			f, err := cn.Next(500 * time.Millisecond)
			if err != nil {
				if strings.Contains(err.Error(), "no matching frame") {
					continue
				}
				break // the node died: reconnect elsewhere
			}
			frames = append(frames, f)
		}
		cn.Close()
	}
}

func (c *cluster) agentFrame(cn *webtest.Conn, me int64, log *agentLog, f webtest.Frame, cursor **int64, pending map[string]string) {
	switch f.Type {
	case "ack":
		if f.Message == nil {
			return
		}
		delete(pending, f.ID)
		c.mu.Lock()
		if _, hook := c.hookConv(f.Message.ConversationID); hook {
			c.hookReplies[f.Message.ID] = true
		}
		c.replies[f.Message.ID] = f.Message.ConversationID
		c.mu.Unlock()
	case "message":
		m := f.Message
		if m == nil {
			return
		}
		if *cursor == nil || m.ID > **cursor {
			id := m.ID
			*cursor = &id
		}
		log.mu.Lock()
		log.ids[m.ID]++
		if m.Seq <= log.lastSeq[m.ConversationID] {
			log.disorder = append(log.disorder, fmt.Sprintf("conversation %d: seq %d after %d", m.ConversationID, m.Seq, log.lastSeq[m.ConversationID]))
		} else {
			log.lastSeq[m.ConversationID] = m.Seq
		}
		if m.Event != nil && m.Event.Type == "assigned" {
			if log.assigned[m.ConversationID] == nil {
				log.assigned[m.ConversationID] = map[int64]bool{}
			}
			log.assigned[m.ConversationID][m.ID] = true
		}
		if f.Conversation != nil {
			log.assignee[m.ConversationID] = f.Conversation.AssigneeID
		}
		if m.SenderKind == "contact" {
			log.count[m.Text]++
		}
		log.mu.Unlock()
		// The assignee answers every customer message.
		if m.SenderKind == "contact" && f.Conversation != nil && f.Conversation.AssigneeID == me && me != 0 {
			id := fmt.Sprintf("re-%d-%d", m.ConversationID, m.ID)
			text := "re: " + m.Text
			pending[id] = text
			if f.Conversation.Channel == "crm" {
				c.mu.Lock()
				c.visitorConv[m.ConversationID] = -1
				c.mu.Unlock()
			}
			_ = cn.SendText(id, m.ConversationID, text, false)
		}
	}
}

// convOfReply reads the conversation back from a reply's client id.
func convOfReply(id string) int64 {
	var conv, msg int64
	_, _ = fmt.Sscanf(id, "re-%d-%d", &conv, &msg)
	return conv
}

// hookConv reports whether conv is a webhook customer's (c.mu held).
func (c *cluster) hookConv(conv int64) (int, bool) {
	v, ok := c.visitorConv[conv]
	return v, ok && v < 0
}

func (c *cluster) runVisitor(sending, ctx context.Context, v int, log *visitorLog) {
	var (
		token string
		cur   webtest.Cursor
		seq   int
	)
	for ctx.Err() == nil {
		n := c.live(v % clusterNodes)
		wc := &webtest.Client{Base: n.base}
		if token == "" {
			s, err := wc.StartSession(ctx, webtest.SessionRequest{Name: fmt.Sprintf("visitor %d", v)})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			token = s.Token
		}
		cn, err := wc.DialVisitor(ctx, token, cur, webtest.DialOptions{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		replay, _, err := cn.Sync(10 * time.Second)
		if err != nil {
			cn.Close()
			continue
		}
		for _, f := range replay {
			c.visitorFrame(v, log, &cur, f)
		}
		for ctx.Err() == nil {
			if sending.Err() == nil {
				text := fmt.Sprintf("v%d-%04d", v, seq)
				if err := cn.SendText(text, 0, text, false); err != nil {
					break
				}
				acked, broken := false, false
				for !acked && !broken {
					f, err := cn.Next(10 * time.Second)
					switch {
					case err != nil:
						broken = true
					case f.Type == "ack" && f.ID == text && f.Message != nil:
						acked = true
						c.mu.Lock()
						c.acked[text] = true
						c.visitorConv[f.Message.ConversationID] = v
						c.mu.Unlock()
						log.mu.Lock()
						log.conv = f.Message.ConversationID
						log.mu.Unlock()
						// The cursor moves with message frames only
						// (docs/protocol.md, "Resume and cursors"): an
						// agent's reply committed just before this
						// message may still be on its way, and a cursor
						// raised to this ack's seq would skip it on a
						// resume elsewhere.
					case f.Type == "error" && f.ID == text:
						c.errorf("visitor %d: send %s refused: %s", v, text, f.Raw)
						acked = true
					default:
						c.visitorFrame(v, log, &cur, f)
					}
				}
				if broken {
					break // resend the same text (client id) elsewhere
				}
				seq++
				continue
			}
			f, err := cn.Next(500 * time.Millisecond)
			if err != nil {
				if strings.Contains(err.Error(), "no matching frame") {
					continue
				}
				break
			}
			c.visitorFrame(v, log, &cur, f)
		}
		cn.Close()
	}
}

func (c *cluster) visitorFrame(v int, log *visitorLog, cur *webtest.Cursor, f webtest.Frame) {
	if f.Type != "message" || f.Message == nil {
		return
	}
	m := f.Message
	cur.Advance(f)
	if m.SenderKind != "agent" {
		return
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	log.ids[m.ID]++
	if m.Seq <= log.lastSeq {
		log.disorder = append(log.disorder, fmt.Sprintf("seq %d after %d", m.Seq, log.lastSeq))
	} else {
		log.lastSeq = m.Seq
	}
}

func (c *cluster) runHookCustomer(sending context.Context, h int) {
	client := &http.Client{Timeout: 10 * time.Second}
	for seq := 0; sending.Err() == nil; seq++ {
		id := fmt.Sprintf("h%d-%04d", h, seq)
		for try := 0; ; try++ {
			n := c.live(randomInt(clusterNodes))
			resp, err := webhooktest.Post(client, n.base+"/webhooks/crm", clusterSecret,
				webhook.Inbound{ID: id, From: fmt.Sprintf("hook-customer-%d", h), Text: id})
			if err == nil {
				ok := resp.StatusCode == http.StatusOK
				resp.Body.Close()
				if ok {
					c.mu.Lock()
					c.acked[id] = true
					c.mu.Unlock()
					break
				}
			}
			if sending.Err() != nil {
				return // unacknowledged: not counted
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) ackedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked)
}

// settled reports whether every agent has every acknowledged customer
// message and every visitor every acknowledged reply.
func (c *cluster) settled(agents []*agentLog, visitors []*visitorLog) bool {
	c.mu.Lock()
	acked := make([]string, 0, len(c.acked))
	for text := range c.acked {
		acked = append(acked, text)
	}
	replies := make(map[int64]int64, len(c.replies))
	for id, conv := range c.replies {
		replies[id] = conv
	}
	hook := len(c.hookReplies)
	c.mu.Unlock()
	for _, l := range agents {
		l.mu.Lock()
		for _, text := range acked {
			if l.count[text] == 0 {
				l.mu.Unlock()
				return false
			}
		}
		l.mu.Unlock()
	}
	for id, conv := range replies {
		c.mu.Lock()
		v, ok := c.visitorConv[conv]
		c.mu.Unlock()
		if !ok || v < 0 {
			continue
		}
		l := visitors[v]
		l.mu.Lock()
		got := l.ids[id]
		l.mu.Unlock()
		if got == 0 {
			return false
		}
	}
	return len(distinct(c.rcv.Delivered())) >= hook
}

func distinct(ds []webhooktest.Delivery) map[int64]int {
	m := map[int64]int{}
	for _, d := range ds {
		m[d.MessageID]++
	}
	return m
}

func (c *cluster) check(agents []*agentLog, visitors []*visitorLog) {
	t := c.t
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		t.Error(e)
	}
	t.Logf("%d customer messages acknowledged, %d replies acknowledged (%d to webhook customers)", len(c.acked), len(c.replies), len(c.hookReplies))
	for a, l := range agents {
		l.mu.Lock()
		missing, doubled := 0, 0
		for text := range c.acked {
			switch n := l.count[text]; {
			case n == 0:
				missing++
			case n > 1:
				doubled++
			}
		}
		if missing > 0 || doubled > 0 {
			t.Errorf("agent %d: %d acknowledged customer messages never arrived, %d arrived more than once", a, missing, doubled)
		}
		for id, n := range l.ids {
			if n > 1 {
				t.Errorf("agent %d: message %d arrived %d times", a, id, n)
			}
		}
		for _, d := range l.disorder {
			t.Errorf("agent %d: out of order: %s", a, d)
		}
		for conv, ids := range l.assigned {
			if len(ids) > 1 {
				t.Errorf("conversation %d was assigned %d times", conv, len(ids))
			}
		}
		l.mu.Unlock()
	}
	// max_open_per_agent, cluster-wide, as the first agent last saw it.
	open := map[int64]int{}
	agents[0].mu.Lock()
	for _, id := range agents[0].assignee {
		if id != 0 {
			open[id]++
		}
	}
	agents[0].mu.Unlock()
	for id, n := range open {
		if n > clusterMaxOpen {
			t.Errorf("agent %d holds %d conversations; max_open_per_agent is %d", id, n, clusterMaxOpen)
		}
	}
	for id, conv := range c.replies {
		v, ok := c.visitorConv[conv]
		if !ok || v < 0 {
			continue
		}
		l := visitors[v]
		l.mu.Lock()
		if n := l.ids[id]; n != 1 {
			t.Errorf("visitor %d: reply %d arrived %d times", v, id, n)
		}
		l.mu.Unlock()
	}
	for v, l := range visitors {
		for _, d := range l.disorder {
			t.Errorf("visitor %d: out of order: %s", v, d)
		}
	}
	got := distinct(c.rcv.Delivered())
	for id := range c.hookReplies {
		if got[id] == 0 {
			t.Errorf("reply %d to a webhook customer was never delivered", id)
		}
	}
}

// leaseHolder returns the live node whose /metrics says it holds the lease
// name, or nil.
func (c *cluster) leaseHolder(name string) *clusterNode {
	want := fmt.Sprintf(`kefu_lease_held{name=%q} 1`, name)
	for _, n := range c.nodes {
		if n.dead.Load() {
			continue
		}
		resp, err := http.Get(n.base + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		held := false
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == want {
				held = true
			}
		}
		resp.Body.Close()
		if held {
			return n
		}
	}
	return nil
}

func randomInt(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}
