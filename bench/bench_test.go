package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/node/nodetest"
)

func TestHistBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucket of %d is %d after %d", v, b, prev)
		}
		if bucketLow(b) > v || bucketLow(b+1) <= v {
			t.Fatalf("%d in bucket %d [%d, %d)", v, b, bucketLow(b), bucketLow(b+1))
		}
		prev = b
	}
	if b := bucketOf(1<<64 - 1); b >= histBuckets {
		t.Fatalf("largest value in bucket %d of %d", b, histBuckets)
	}
}

func TestHistQuantiles(t *testing.T) {
	var h Hist
	if h.Quantile(.99) != 0 || h.Summary().Count != 0 {
		t.Fatal("empty histogram not zero")
	}
	r := rand.New(rand.NewSource(1))
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = r.Int63n(1_000_000) // µs
		h.Record(time.Duration(vals[i]) * time.Microsecond)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{.5, .95, .99, .999} {
		want := float64(vals[int(q*float64(len(vals)))-1])
		got := float64(h.Quantile(q).Microseconds())
		if got < want || got > want*1.07+1 {
			t.Errorf("p%g = %v µs, want %v µs within 7 %%", q*100, got, want)
		}
	}
	if h.Max() != time.Duration(vals[len(vals)-1])*time.Microsecond || h.Quantile(1) != h.Max() {
		t.Errorf("max %v, p100 %v, want %v µs", h.Max(), h.Quantile(1), vals[len(vals)-1])
	}
	var a, b Hist
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	b.Record(5 * time.Millisecond)
	a.Merge(&b)
	if a.Count() != 3 || a.Max() != 5*time.Millisecond || a.Mean() != 3*time.Millisecond || a.Quantile(0) != time.Millisecond {
		t.Errorf("merged: %+v", a.Summary())
	}
	var z Hist
	z.Record(-time.Second) // clock skew: counted as 0
	if z.Quantile(.5) != 0 {
		t.Error("negative latency not clamped")
	}
}

func TestHistRecordAllocs(t *testing.T) {
	var h Hist
	if n := testing.AllocsPerRun(100, func() { h.Record(1234 * time.Microsecond) }); n != 0 {
		t.Errorf("Record allocates %v times", n)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = appendSend(buf[:0], 123456, 100) }); n != 0 {
		t.Errorf("appendSend allocates %v times", n)
	}
}

func TestAppendSendAndParse(t *testing.T) {
	b := appendSend(nil, 4711, 100)
	var f struct{ Type, ID, Text string }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if f.Type != "send" || f.ID != "b4711" || len(f.Text) != 100 || !strings.HasPrefix(f.Text, "kb:4711;") {
		t.Fatalf("frame %s", b)
	}
	if g, ok := intField(b, textKey); !ok || g != 4711 {
		t.Fatalf("text key: %d %v", g, ok)
	}
	if g, ok := intField([]byte(`{"type":"ack","id":"b42","message":{"id":9}}`), idKey); !ok || g != 42 {
		t.Fatalf("id key: %d %v", g, ok)
	}
	if _, ok := intField([]byte(`{"type":"ack","id":"x"}`), idKey); ok {
		t.Fatal("parsed an id that is not the bench's")
	}
}

func TestParse(t *testing.T) {
	c, err := Parse(strings.Fields("throughput -url http://127.0.0.1:8080/ -visitors 5 -agents 2 -m 200 -rate 500 -agent-email a@x -agent-password p -json out.json -pid 42 -idle 10"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Scenario != "throughput" || c.URL != "http://127.0.0.1:8080" || c.Visitors != 5 || c.Agents != 2 || c.Messages != 200 ||
		c.Rate != 500 || c.JSON != "out.json" || c.PID != 42 || c.Idle != 10 || c.Window != 1 || c.Size != 100 {
		t.Fatalf("parsed %+v", c)
	}
	c, err = Parse(strings.Fields("throughput -url http://a:1/,http://b:2,https://c:3 -pid 7,8,9 -agents 3 -agent-email a@x -agent-password p"), io.Discard)
	if err != nil || strings.Join(c.URLs, " ") != "http://a:1 http://b:2 https://c:3" || c.URL != "http://a:1" ||
		len(c.PIDs) != 3 || c.PIDs[2] != 9 || c.PID != 7 {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	c, err = Parse(strings.Fields("handshake -url http://a:1,http://b:2"), io.Discard)
	if err != nil || len(c.URLs) != 2 || len(c.PIDs) != 0 || c.PID != 0 {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	c, err = Parse(strings.Fields("idle -url http://h:1 -n 19000 -procs 4 -srcs 8 -hold 30s"), io.Discard)
	if err != nil || c.Conns != 19000 || c.Procs != 4 || c.Srcs != 8 || c.Hold != 30*time.Second {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	c, err = Parse(strings.Fields("reference -url http://h:1 -scenarios handshake,idle"), io.Discard)
	if err != nil || strings.Join(c.Scenarios, ",") != "handshake,idle" {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	if _, err := Parse([]string{"reference-server", "-addr", "127.0.0.1:0"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"", "-url http://h:1", "nosuch -url http://h:1", "idle", "idle -url ftp://h", "idle -url http://h:1 -n 0",
		"throughput -url http://h:1", // no agent credentials
		"idle -url http://h:1 extra", "idle -url http://h:1 -srcs 300", "throughput -url http://h:1 -agent-email a -agent-password b -size 5",
		"reference -url http://h:1 -scenarios longpoll", "idle -url http://h:1 -rate -1",
		"idle -url http://a:1,http://b:2 -pid 5", // a pid for one server of two
		"idle -url http://a:1 -pid 5,6",          // more pids than servers
		"idle -url http://a:1 -pid x", "idle -url http://a:1 -pid 0", "idle -url http://a:1,",
		"idle -url http://a:1,,http://b:2", "idle -url http://a:1,ftp://b",
		"reference -url http://a:1,http://b:2", // the reference compares one server
	} {
		if _, err := Parse(strings.Fields(bad), io.Discard); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader("# HELP x\ngo_goroutines 12\nprocess_resident_memory_bytes 1.5e+07\nfoo{a=\"b\"} 3\n")))
	if err != nil || m["go_goroutines"] != 12 || m["process_resident_memory_bytes"] != 1.5e7 || len(m) != 2 {
		t.Fatalf("%v %v", m, err)
	}
	if _, _, err := procStat(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

const (
	agentEmail = "bench@example.com"
	agentPass  = "bench-password-1"
	// nodeConfig lets the bench's load through the web channel's limits.
	nodeConfig = `
routing: {offline_reply: ""}
agents:
  - {email: ` + agentEmail + `, name: Bench, role: agent, password: ` + agentPass + `}
channels:
  web:
    enabled: true
    limits: {requests_per_minute: 1000000, messages_per_minute: 1000000, conversations_per_hour: 1000000}
`
)

// TestEndToEnd runs throughput and idle against a real in-process node:
// every message is accounted for. It never asserts on timing.
func TestEndToEnd(t *testing.T) {
	n := nodetest.Start(t, nodeConfig)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cfg, err := Parse(strings.Fields("throughput -url "+n.URL+" -visitors 5 -agents 1 -m 200 -idle 10 -agent-email "+agentEmail+" -agent-password "+agentPass), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tp := rep.Results[0].Throughput
	checkAccounted(t, tp, 200)
	if tp.IdleHeld != 10 || tp.Server.Error != "" || tp.Server.Source != "/metrics" || tp.Server.GoroutinesAfter <= 0 {
		t.Errorf("report: %+v", tp)
	}
	// SQLite's group commit, from the server's /metrics: every message a
	// write, in at most as many commits.
	if s := tp.Server; s.StoreWrites < 200 || s.StoreCommits <= 0 || s.StoreCommits > s.StoreWrites {
		t.Errorf("store commits %v for %v writes", s.StoreCommits, s.StoreWrites)
	}
	if tp.ServerCPUus <= 0 || tp.ClientCPUus <= 0 || tp.Server.CPUSeconds <= 0 {
		t.Errorf("CPU per message: server %v µs, client %v µs", tp.ServerCPUus, tp.ClientCPUus)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	if !strings.Contains(table.String(), "per commit)") || !strings.Contains(table.String(), "of a core, ") {
		t.Errorf("table lacks the store's commits:\n%s", table.String())
	}

	// With the conversations started first: the warm-up messages are not
	// counted, and every counted one is accounted for.
	cfg, err = Parse(strings.Fields("throughput -url "+n.URL+" -visitors 5 -agents 1 -m 100 -rate 500 -warmup -settle 50ms -agent-email "+agentEmail+" -agent-password "+agentPass), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err = Run(ctx, cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if tp = rep.Results[0].Throughput; !tp.Warmup {
		t.Errorf("warm-up not reported: %+v", tp)
	}
	checkAccounted(t, tp, 100)
	cs, err := n.Service().Store().Conversations(ctx, core.ConversationFilter{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs { // the run's five, each started by its warm-up message
		if ms := n.Messages(t, c.ID); len(ms) == 0 || ms[0].Text != "warm-up" {
			t.Errorf("conversation %d does not start with the warm-up: %+v", c.ID, ms[:min(len(ms), 1)])
		}
	}

	cfg, err = Parse(strings.Fields("idle -url "+n.URL+" -n 50 -c 10 -settle 100ms -hold 200ms -srcs 2"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	idle := rep.Results[0].Idle
	if idle.Opened != 50 || idle.Failed != 0 || idle.Server.Error != "" || idle.Server.RSSAfterMB <= 0 || idle.Server.GoroutinesAfter <= 0 || idle.HoldSeconds <= 0 {
		t.Errorf("idle report: %+v", idle)
	}

	// The report prints and encodes with every field.
	var sb strings.Builder
	rep.WriteTable(&sb)
	for _, want := range []string{"RSS per connection", "goroutines per connection", "idle CPU"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
	file := filepath.Join(t.TempDir(), "out.json")
	cfg.JSON = file
	if b, err := json.Marshal(rep); err != nil || !strings.Contains(string(b), `"rss_per_conn_kb"`) {
		t.Errorf("json %s %v", b, err)
	}
}

// TestReconnectHandshakes: returning visitors resume with nothing missed,
// on a node that answers their first message (the default offline reply,
// no agent online), so the cursor must come from what they received.
func TestReconnectHandshakes(t *testing.T) {
	n := nodetest.Start(t, strings.Replace(nodeConfig, `routing: {offline_reply: ""}`, "", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := Parse(strings.Fields("handshake -url "+n.URL+" -c 4 -d 300ms -settle 1s -reconnect"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if hs := rep.Results[0].Handshake; hs.Mode != "reconnect" || hs.Established == 0 || hs.Failed != 0 || hs.Replayed != 0 {
		t.Errorf("reconnect handshakes: %+v", hs)
	}
	// The server's CPU per handshake from its /metrics (here the test
	// process's, the client's included), the client's from its rusage.
	if hs := rep.Results[0].Handshake; hs.Server.Error != "" || hs.Server.CPUSeconds <= 0 || hs.ServerCPUus <= 0 || hs.ClientCPUus <= 0 {
		t.Errorf("CPU per handshake: server %v µs (%+v), client %v µs", hs.ServerCPUus, hs.Server, hs.ClientCPUus)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	if !strings.Contains(table.String(), "% of a core)") {
		t.Errorf("table lacks the CPU per handshake:\n%s", table.String())
	}
	cs, err := n.Service().Store().Conversations(ctx, core.ConversationFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs { // each got the offline reply after its first message
		if ms := n.Messages(t, c.ID); len(ms) < 2 || ms[len(ms)-1].SenderKind == core.SenderContact {
			t.Errorf("conversation %d: no reply after the visitor's message: %+v", c.ID, ms)
		}
	}
}

func checkAccounted(t *testing.T, tp *ThroughputResult, n int64) {
	t.Helper()
	if tp.Sent != n || tp.Acked != n || tp.Refused != 0 || tp.Unanswered != 0 || tp.Delivered != n || tp.Lost != 0 ||
		tp.Deliveries != n*int64(tp.Agents) || tp.Latency.Count != uint64(tp.Deliveries) || len(tp.Errors) != 0 {
		t.Errorf("not every message accounted for: %+v", tp)
	}
	if tp.MessagesPerSec <= 0 || tp.Latency.MaxMS < tp.Latency.P50MS {
		t.Errorf("figures missing: %+v", tp)
	}
	// Every ack's latency, once.
	if tp.AckLatency.Count != uint64(tp.Acked) || tp.AckLatency.MaxMS <= 0 || tp.AckLatency.MaxMS < tp.AckLatency.P50MS {
		t.Errorf("ack latency: %+v for %d acks", tp.AckLatency, tp.Acked)
	}
}

// TestLongPollAndReference runs longpoll against a node and throughput and
// handshake against the reference relay (in-process here; the command
// starts it in its own process).
func TestLongPollAndReference(t *testing.T) {
	n := nodetest.Start(t, `
routing: {offline_reply: ""}
agents:
  - {email: `+agentEmail+`, name: Bench, role: agent, password: `+agentPass+`}
channels:
  web:
    enabled: true
    long_poll_timeout: 2s
    limits: {requests_per_minute: 1000000, messages_per_minute: 1000000, conversations_per_hour: 1000000}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := Parse(strings.Fields("longpoll -url "+n.URL+" -visitors 3 -agents 1 -m 60 -agent-email "+agentEmail+" -agent-password "+agentPass), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkAccounted(t, rep.Results[0].Throughput, 60)

	ref := httptest.NewServer(NewReferenceHandler())
	defer ref.Close()
	cfg, err = Parse(strings.Fields("throughput -url "+ref.URL+" -visitors 5 -agents 2 -m 300 -rate 2000 -agent-email x -agent-password y"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkAccounted(t, rep.Results[0].Throughput, 300)
	cfg, err = Parse(strings.Fields("handshake -url "+ref.URL+" -c 4 -d 300ms"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if hs := rep.Results[0].Handshake; hs.Established == 0 || hs.Failed != 0 || hs.Latency.Count != uint64(hs.Established) {
		t.Errorf("handshake: %+v", hs)
	}
}

// cutProxy forwards TCP to a server and cuts the first agent WebSocket
// (GET /ws/agent) once it has carried cutAfter bytes to the client, as a
// server dropping a slow consumer does.
type cutProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64 // never cuts when it is above what the test sends
	cut      atomic.Bool
	accepted atomic.Int64 // TCP connections accepted
}

func newCutProxy(t *testing.T, target string, cutAfter int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cutAfter: cutAfter}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	br := bufio.NewReader(c)
	line, err := br.Peek(16)
	if err != nil {
		return
	}
	down := io.Writer(c)
	if strings.HasPrefix(string(line), "GET /ws/agent ") && p.cut.CompareAndSwap(false, true) {
		down = &cutWriter{w: c, left: p.cutAfter, conns: []net.Conn{c, up}}
	}
	go func() { _, _ = io.Copy(up, br); up.Close() }()
	_, _ = io.Copy(down, up)
}

// cutWriter closes its connections once left bytes have gone through.
type cutWriter struct {
	w     io.Writer
	left  int64
	conns []net.Conn
}

func (cw *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > cw.left {
		b = b[:cw.left]
	}
	n, err := cw.w.Write(b)
	cw.left -= int64(n)
	if err == nil && cw.left == 0 {
		for _, c := range cw.conns {
			c.Close()
		}
		return n, io.ErrClosedPipe
	}
	return n, err
}

// TestAgentReconnects: an agent connection the server ends mid-run (here a
// proxy cuts it) is reopened with its cursor and what it missed is
// replayed, so every message is still accounted for as delivered.
func TestAgentReconnects(t *testing.T) {
	n := nodetest.Start(t, nodeConfig)
	u, err := url.Parse(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := newCutProxy(t, u.Host, 20<<10) // well inside 300 message frames of ~500 bytes
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := Parse(strings.Fields("throughput -url http://"+p.ln.Addr().String()+" -visitors 5 -agents 1 -m 300 -window 2 -agent-email "+agentEmail+" -agent-password "+agentPass), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tp := rep.Results[0].Throughput
	if !p.cut.Load() || tp.AgentReconnects < 1 {
		t.Fatalf("the agent connection was not cut and reopened: cut %v, %+v", p.cut.Load(), tp)
	}
	checkAccounted(t, tp, 300)
	var sb strings.Builder
	rep.WriteTable(&sb)
	if !strings.Contains(sb.String(), "agent reconnects") {
		t.Errorf("table lacks the reconnects:\n%s", sb.String())
	}
}

// TestCluster spreads throughput, handshake and idle over three in-process
// nodes on one PostgreSQL schema and one Redis bus (-url a,b,c): visitors
// and agent connections go round-robin over the nodes, so two of every
// message's three agent deliveries cross nodes, and every message is still
// accounted for, once and in order on every agent connection. Each node is
// reached through a counting proxy, which shows the load was spread. It
// never asserts on timing.
func TestCluster(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	redisURL := testenv.Redis(t)
	ns := "bench" + strconv.FormatUint(rand.Uint64(), 36)
	testenv.CleanRedis(t, redisURL, ns+":") // runs after the nodes stop
	var urls []string
	var proxies []*cutProxy
	for i := range 3 {
		n := nodetest.Start(t, fmt.Sprintf(`
node_id: bench-%d
store: {driver: postgres, dsn: %q}
bus: {driver: redis, url: %q, namespace: %s}
`, i, dsn, redisURL, ns)+nodeConfig)
		u, err := url.Parse(n.URL)
		if err != nil {
			t.Fatal(err)
		}
		p := newCutProxy(t, u.Host, 1<<62) // counts, never cuts
		proxies = append(proxies, p)
		urls = append(urls, "http://"+p.ln.Addr().String())
	}
	list := strings.Join(urls, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	rep := runArgs(ctx, t, "throughput -url "+list+" -visitors 6 -agents 3 -m 300 -window 2 -idle 6 -agent-email "+agentEmail+" -agent-password "+agentPass)
	tp := rep.Results[0].Throughput
	checkAccounted(t, tp, 300)
	if tp.Duplicates != 0 || tp.OutOfOrder != 0 {
		t.Errorf("agents received %d duplicates and %d frames out of order", tp.Duplicates, tp.OutOfOrder)
	}
	if rep.Results[0].URL != list || len(tp.Nodes) != 3 || tp.Server.Error != "" || tp.Server.GoroutinesAfter <= 0 {
		t.Fatalf("report: %+v", rep.Results[0])
	}
	for i, n := range tp.Nodes {
		if n.URL != urls[i] || n.Error != "" || n.RSSAfterMB <= 0 || n.Source != "/metrics" {
			t.Errorf("node %d: %+v", i, n)
		}
		// Each node held 2 visitor and 1 agent WebSockets and 2 idle ones.
		if got := proxies[i].accepted.Load(); got < 5 {
			t.Errorf("node %d accepted %d connections, want the load spread (at least 5)", i, got)
		}
	}
	var sb strings.Builder
	rep.WriteTable(&sb)
	for _, want := range []string{"node " + urls[2], "3 nodes summed", "duplicates, out of order", "0, 0 (agent frames"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}

	before := make([]int64, 3)
	for i, p := range proxies {
		before[i] = p.accepted.Load()
	}
	rep = runArgs(ctx, t, "handshake -url "+list+" -c 3 -d 300ms")
	if hs := rep.Results[0].Handshake; hs.Established == 0 || hs.Failed != 0 || hs.ServerCPUus <= 0 || len(hs.Nodes) != 3 {
		t.Errorf("handshake: %+v", hs)
	}
	for i, p := range proxies {
		if p.accepted.Load() == before[i] {
			t.Errorf("node %d served no handshake", i)
		}
	}

	rep = runArgs(ctx, t, "idle -url "+list+" -n 30 -c 6 -settle 100ms -hold 200ms")
	idle := rep.Results[0].Idle
	if idle.Opened != 30 || idle.Failed != 0 || len(idle.Nodes) != 3 || idle.Server.Error != "" || idle.Server.RSSAfterMB <= 0 {
		t.Errorf("idle report: %+v", idle)
	}
}

// runArgs parses a `kefu bench` command line and runs it.
func runArgs(ctx context.Context, t *testing.T, args string) *Report {
	t.Helper()
	cfg, err := Parse(strings.Fields(args), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestNodesFigures: several servers' figures are summed, one server's
// error names it and fails the sum, and connections are shared out
// round-robin.
func TestNodesFigures(t *testing.T) {
	tg := target{name: "kefu", urls: []string{"http://a", "http://b"}}
	ns := tg.connect(1)
	if ns.client(0) != ns.clients[0] || ns.client(3) != ns.clients[1] || ns.share(5, 0) != 3 || ns.share(5, 1) != 2 {
		t.Fatal("round-robin")
	}
	at := time.Now()
	snap := func(d time.Duration, rss, cpu, g float64, err error) snapshot {
		s := serverSample{At: at.Add(d), RSS: rss * (1 << 20), CPU: cpu, Goroutines: g, Source: "/proc", Commits: 10 * cpu, Writes: 30 * cpu}
		return snapshot{s: []serverSample{s, s}, errs: []error{nil, err}}
	}
	total, per := ns.figures(snap(0, 10, 1, 5, nil), snap(time.Second, 12, 1.5, 9, nil), 4)
	if len(per) != 2 || total.Error != "" || total.RSSBeforeMB != 20 || total.RSSAfterMB != 24 || total.CPUPercent != 100 ||
		total.GoroutinesAfter != 18 || total.RSSPerConnKB != 1024 || total.GoroutinesPerConn != 2 || per[1].CPUPercent != 50 ||
		total.StoreCommits != 10 || total.StoreWrites != 30 || per[0].StoreCommits != 5 || total.CPUSeconds != 1 || per[1].CPUSeconds != 0.5 {
		t.Fatalf("total %+v, per node %+v", total, per)
	}
	// A node without the store's counters (-1): the sum has none either,
	// rather than the other nodes' alone.
	after := snap(time.Second, 12, 1.5, 9, nil)
	after.s[1].Commits, after.s[1].Writes = -1, -1
	if total, per = ns.figures(snap(0, 10, 1, 5, nil), after, 4); total.Error != "" || total.StoreCommits != 0 || total.StoreWrites != 0 || per[0].StoreCommits != 5 || total.CPUPercent != 100 {
		t.Fatalf("a node without commit counters: total %+v, per node %+v", total, per)
	}
	total, per = ns.figures(snap(0, 10, 1, 5, nil), snap(time.Second, 12, 1.5, 9, errors.New("gone")), 0)
	if !strings.Contains(total.Error, "http://b: gone") || per[0].Error != "" || per[1].Error == "" {
		t.Fatalf("total %+v, per node %+v", total, per)
	}
}

// TestRatios: kefu's figures over the reference's; a CPU figure not known
// on one side (its sampler failed: 0) gives no ratio, not one of 0.
func TestRatios(t *testing.T) {
	hs := func(tg string, perSec, cpu float64) Result {
		return Result{Scenario: "handshake", Target: tg, Handshake: &HandshakeResult{PerSecond: perSec, ServerCPUus: cpu}}
	}
	got := ratios([]Result{hs("kefu", 900, 220), hs("reference", 1000, 200)})
	if len(got) != 2 || got[0].Figure != "handshakes/s" || got[0].Ratio != 0.9 || got[1].Figure != "server CPU µs per handshake" || got[1].Ratio != 1.1 {
		t.Errorf("ratios %+v", got)
	}
	got = ratios([]Result{hs("kefu", 900, 0), hs("reference", 1000, 200)})
	if len(got) != 1 || got[0].Figure != "handshakes/s" {
		t.Errorf("with kefu's CPU unknown: %+v", got)
	}
}

// cpuPer divides the CPU used by the operations done, and gives 0 for a
// figure not known: a server whose sampler failed, an unreadable rusage
// (-1), no operation.
func TestCPUPer(t *testing.T) {
	srv := ServerFigures{CPUSeconds: 0.5}
	for _, tc := range []struct {
		name           string
		srv            ServerFigures
		cpu0, cpu1     time.Duration
		n              int64
		server, client float64
	}{
		{"both", srv, time.Second, 1250 * time.Millisecond, 1000, 500, 250},
		{"server unknown", ServerFigures{CPUSeconds: 0.5, Error: "no /proc"}, 0, time.Second, 1000, 0, 1000},
		{"client unknown", srv, -1, time.Second, 1000, 500, 0},
		{"nothing done", srv, 0, time.Second, 0, 0, 0},
	} {
		server, client := cpuPer(tc.srv, tc.cpu0, tc.cpu1, tc.n)
		if server != tc.server || client != tc.client {
			t.Errorf("%s: %v µs server, %v µs client; want %v, %v", tc.name, server, client, tc.server, tc.client)
		}
	}
}
