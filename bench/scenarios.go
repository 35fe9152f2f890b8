package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
	"golang.org/x/sync/errgroup"
)

// IdleResult is the idle scenario's report.
type IdleResult struct {
	Requested   int            `json:"requested"`
	Opened      int            `json:"opened"`
	Failed      int            `json:"failed"`
	Errors      map[string]int `json:"errors,omitempty"`
	Procs       int            `json:"procs"`
	Srcs        int            `json:"source_addresses"`
	OpenSeconds float64        `json:"open_seconds"`
	HoldSeconds float64        `json:"hold_seconds"`
	Server      ServerFigures  `json:"server"`
	Nodes       []NodeFigures  `json:"nodes,omitempty"`
}

// ServerFigures are the server process's figures around a scenario.
type ServerFigures struct {
	Source            string  `json:"source"` // /proc or /metrics
	RSSBeforeMB       float64 `json:"rss_before_mb"`
	RSSAfterMB        float64 `json:"rss_after_mb"`
	RSSPerConnKB      float64 `json:"rss_per_conn_kb,omitempty"`
	GoroutinesBefore  float64 `json:"goroutines_before"`
	GoroutinesAfter   float64 `json:"goroutines_after"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn,omitempty"`
	CPUPercent        float64 `json:"cpu_percent"` // of one core, over the measured period
	CPUSeconds        float64 `json:"cpu_seconds"` // over the measured period
	// The store's commits over the period and the writes they held
	// (SQLite's group commit); 0 when the server does not export them.
	StoreCommits float64 `json:"store_commits,omitempty"`
	StoreWrites  float64 `json:"store_writes,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// HandshakeResult is the handshake scenario's report.
type HandshakeResult struct {
	Established int            `json:"established"`
	Failed      int            `json:"failed"`
	Errors      map[string]int `json:"errors,omitempty"`
	Dialers     int            `json:"dialers"`
	Mode        string         `json:"mode"`     // new (session + WebSocket) or reconnect (WebSocket with a stored token)
	Replayed    int            `json:"replayed"` // reconnect: frames replayed before synced (a returning visitor has missed nothing: 0)
	Seconds     float64        `json:"seconds"`
	PerSecond   float64        `json:"per_second"`
	Latency     Latency        `json:"latency"`
	// The CPU one handshake cost the server (all nodes) and this client
	// process, in µs (failed ones' CPU included); the client's share shows
	// what a server on the same machine was left. 0: not known.
	ServerCPUus float64       `json:"server_cpu_us_per_handshake"`
	ClientCPUus float64       `json:"client_cpu_us_per_handshake"`
	Server      ServerFigures `json:"server"`
	Nodes       []NodeFigures `json:"nodes,omitempty"`
}

// ThroughputResult is the throughput (and longpoll) scenario's report.
// Every message is accounted for: Sent = Acked + Refused + Unanswered, and
// Acked = Delivered + Lost (delivered: received by every agent connection).
// Duplicates and OutOfOrder are broken guarantees (docs/protocol.md, "Order
// and delivery"): they must stay 0, on one node as across a cluster.
type ThroughputResult struct {
	Transport  string  `json:"transport"` // websocket or longpoll
	Warmup     bool    `json:"warmup"`    // every visitor's conversation was open before the clock started
	Mode       string  `json:"mode"`      // closed or open loop
	TargetRate float64 `json:"target_rate,omitempty"`
	Visitors   int     `json:"visitors"`
	Agents     int     `json:"agents"`
	IdleHeld   int     `json:"idle_connections_held"`
	// AgentReconnects counts agent connections the server ended during the
	// run (a slow consumer's is dropped) that the bench reopened with
	// their cursor, as a client does: what they missed was replayed.
	AgentReconnects int   `json:"agent_reconnects"`
	Sent            int64 `json:"sent"`
	Acked           int64 `json:"acked"`
	Refused         int64 `json:"refused"`
	Unanswered      int64 `json:"unanswered"`
	Delivered       int64 `json:"delivered"`
	Lost            int64 `json:"lost"`
	Deliveries      int64 `json:"agent_deliveries"`
	// Duplicates counts message frames an agent connection received again
	// (a message is sent to each connection once, replay included).
	Duplicates int64 `json:"duplicates"`
	// OutOfOrder counts message frames whose id was not above the last one
	// the agent connection had received (agents receive in id order).
	OutOfOrder     int64          `json:"out_of_order"`
	Errors         map[string]int `json:"errors,omitempty"`
	Seconds        float64        `json:"seconds"`
	MessagesPerSec float64        `json:"messages_per_second"`
	Latency        Latency        `json:"latency"`
	// AckLatency is from the send (open loop: when it was due) to its
	// sender's ack: the message durable (docs/protocol.md, "ack").
	AckLatency Latency `json:"ack_latency"`
	// The CPU one delivered message cost the server (all nodes) and this
	// client process, in µs; 0: not known.
	ServerCPUus float64       `json:"server_cpu_us_per_message"`
	ClientCPUus float64       `json:"client_cpu_us_per_message"`
	Server      ServerFigures `json:"server"`
	Nodes       []NodeFigures `json:"nodes,omitempty"`
}

func figures(before, after serverSample, conns int, errb, erra error) ServerFigures {
	f := ServerFigures{Source: after.Source, GoroutinesBefore: before.Goroutines, GoroutinesAfter: after.Goroutines}
	if err := errors.Join(errb, erra); err != nil {
		f.Error = err.Error()
		return f
	}
	f.RSSBeforeMB, f.RSSAfterMB = before.RSS/(1<<20), after.RSS/(1<<20)
	if before.Commits >= 0 && after.Commits >= 0 {
		f.StoreCommits, f.StoreWrites = after.Commits-before.Commits, after.Writes-before.Writes
	}
	if conns > 0 {
		f.RSSPerConnKB = (after.RSS - before.RSS) / 1024 / float64(conns)
		if before.Goroutines >= 0 && after.Goroutines >= 0 {
			f.GoroutinesPerConn = (after.Goroutines - before.Goroutines) / float64(conns)
		}
	}
	f.CPUSeconds = after.CPU - before.CPU
	if d := after.At.Sub(before.At).Seconds(); d > 0 {
		f.CPUPercent = 100 * f.CPUSeconds / d
	}
	return f
}

// openMany opens n visitor WebSockets with the given concurrency, spread
// round-robin over cs (the servers); each is held (answering pings) until
// ctx ends.
func openMany(ctx context.Context, cs []*client, n, dialers int, errs *errCounts) (opened []*wsConn) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(dialers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1); k <= int64(n) && ctx.Err() == nil; k = next.Add(1) {
				cn, err := cs[(k-1)%int64(len(cs))].openVisitor(ctx)
				if err != nil {
					errs.add(err)
					continue
				}
				go cn.hold()
				mu.Lock()
				opened = append(opened, cn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return opened
}

func closeAll(cs []*wsConn) {
	for _, cn := range cs {
		cn.close()
	}
}

// runIdle opens cfg.Conns visitor connections (in this process, or spread
// over cfg.Procs children) and measures the server around them.
func runIdle(ctx context.Context, cfg Config, t target) (*IdleResult, error) {
	ns := t.connect(cfg.Srcs)
	before := ns.sample(ctx)
	res := &IdleResult{Requested: cfg.Conns, Procs: cfg.Procs, Srcs: cfg.Srcs}
	start := time.Now()
	var release func()
	if cfg.Procs > 1 {
		opened, failed, errs, rel, err := spawnIdle(ctx, cfg, t.url())
		if err != nil {
			return nil, err
		}
		res.Opened, res.Failed, res.Errors, release = opened, failed, errs, rel
	} else {
		var errs errCounts
		cs := openMany(ctx, ns.clients, cfg.Conns, cfg.Dialers, &errs)
		res.Opened, res.Errors = len(cs), errs.snapshot()
		res.Failed = cfg.Conns - len(cs)
		release = func() { closeAll(cs) }
	}
	defer release()
	res.OpenSeconds = time.Since(start).Seconds()
	sleep(ctx, cfg.Settle)
	mid := ns.sample(ctx)
	sleep(ctx, cfg.Hold)
	after := ns.sample(ctx)
	res.HoldSeconds = after.s[0].At.Sub(mid.s[0].At).Seconds()
	res.Server, res.Nodes = ns.figures(before, mid, res.Opened)
	// Idle CPU is over the hold only, not the opening.
	hold, holdNodes := ns.figures(mid, after, 0)
	if res.Server.Error == "" && hold.Error == "" {
		res.Server.CPUPercent, res.Server.CPUSeconds = hold.CPUPercent, hold.CPUSeconds
	}
	for i := range res.Nodes {
		if res.Nodes[i].Error == "" && holdNodes[i].Error == "" {
			res.Nodes[i].CPUPercent, res.Nodes[i].CPUSeconds = holdNodes[i].CPUPercent, holdNodes[i].CPUSeconds
		}
	}
	return res, ctx.Err()
}

// cpuPer is the server's CPU (from its figures) and this process's (from
// cpu0 to cpu1, processCPU readings) per operation, in µs, for n
// operations; 0 where not known.
func cpuPer(srv ServerFigures, cpu0, cpu1 time.Duration, n int64) (server, client float64) {
	if n <= 0 {
		return 0, 0
	}
	if srv.Error == "" {
		server = srv.CPUSeconds * 1e6 / float64(n)
	}
	if cpu0 >= 0 && cpu1 >= 0 {
		client = (cpu1 - cpu0).Seconds() * 1e6 / float64(n)
	}
	return server, client
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// runHandshake establishes sessions (session start, WebSocket, hello,
// welcome, synced) with cfg.Dialers concurrent dialers for cfg.Duration,
// closing each one established.
func runHandshake(ctx context.Context, cfg Config, t target) (*HandshakeResult, error) {
	ns := t.connect(cfg.Srcs)
	defer ns.closeSessions() // not to hold them through the next scenario
	var errs errCounts
	var ok, failed, replayed atomic.Int64
	hists := make([]Hist, cfg.Dialers)
	res := &HandshakeResult{Dialers: cfg.Dialers, Mode: "new"}
	// Returning visitors: each dialer's visitor has a conversation before
	// the clock starts, and every handshake is the widget's reconnect.
	var hellos []map[string]any
	if cfg.Reconnect {
		res.Mode = "reconnect"
		hellos = make([]map[string]any, cfg.Dialers)
		toks, convs := make([]string, cfg.Dialers), make([]int64, cfg.Dialers)
		for w := range hellos {
			var err error
			if toks[w], convs[w], err = ns.client(w).returningVisitor(ctx, w); err != nil {
				return nil, fmt.Errorf("returning visitor: %w", err)
			}
		}
		sleep(ctx, cfg.Settle) // what follows the first messages (routing, replies) is done
		for w := range hellos {
			h, err := ns.client(w).resumeHello(ctx, toks[w], convs[w])
			if err != nil {
				return nil, fmt.Errorf("returning visitor: %w", err)
			}
			hellos[w] = h
		}
	}
	before, cpu0 := ns.sample(ctx), processCPU()
	ctx2, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range hists {
		wg.Add(1)
		go func(w int, h *Hist, c *client) {
			defer wg.Done()
			for ctx2.Err() == nil {
				t0 := time.Now()
				var cn *wsConn
				var err error
				if hellos != nil {
					cn, _, err = c.dialSynced(ctx, "/ws/visitor", hellos[w], func([]byte) { replayed.Add(1) })
				} else {
					cn, err = c.openVisitor(ctx) // a handshake under way when the time is up finishes
				}
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						errs.add(err)
					}
					continue
				}
				h.Record(time.Since(t0))
				ok.Add(1)
				cn.close()
			}
		}(w, &hists[w], ns.client(w))
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	cpu1 := processCPU()
	after := ns.sample(ctx)
	var all Hist
	for i := range hists {
		all.Merge(&hists[i])
	}
	res.Server, res.Nodes = ns.figures(before, after, 0)
	res.ServerCPUus, res.ClientCPUus = cpuPer(res.Server, cpu0, cpu1, ok.Load())
	res.Established, res.Failed, res.Errors = int(ok.Load()), int(failed.Load()), errs.snapshot()
	res.Replayed = int(replayed.Load())
	res.Seconds, res.PerSecond, res.Latency = el, float64(ok.Load())/el, all.Summary()
	return res, ctx.Err()
}

// Message states.
const (
	stUnsent uint32 = iota
	stSent
	stAcked
	stRefused
)

// flow is one throughput run's bookkeeping, indexed by message number:
// no per-message allocation.
type flow struct {
	t0       time.Time
	n        int
	agents   int
	sendAt   []atomic.Int64 // ns after t0: intended (open loop) or actual send time
	state    []atomic.Uint32
	recv     []atomic.Uint32 // agent connections that received it
	sent     atomic.Int64
	acked    atomic.Int64
	refused  atomic.Int64
	deliv    atomic.Int64 // received by every agent
	delivAll atomic.Int64 // receipts in all
	last     atomic.Int64 // ns after t0 of the last receipt
	dup      atomic.Int64 // frames of a message the agent connection had already
	disorder atomic.Int64 // message frames not above the connection's last id
	errs     errCounts
}

func newFlow(n, agents int) *flow {
	return &flow{n: n, agents: agents, sendAt: make([]atomic.Int64, n), state: make([]atomic.Uint32, n), recv: make([]atomic.Uint32, n)}
}

// answered records the answer to message g, the first one only; h, if not
// nil, takes an ack's latency.
func (f *flow) answered(g int64, ok bool, h *Hist) {
	if g < 0 || g >= int64(f.n) {
		return
	}
	st := stAcked
	if !ok {
		st = stRefused
	}
	if f.state[g].CompareAndSwap(stSent, st) {
		if ok {
			f.acked.Add(1)
			if h != nil {
				h.Record(time.Since(f.t0) - time.Duration(f.sendAt[g].Load()))
			}
		} else {
			f.refused.Add(1)
		}
	}
}

// received records agent receipt of message g; seen is that agent's own
// bitmap (so a repeated frame counts once).
func (f *flow) received(g int64, seen []uint64, h *Hist) {
	if g < 0 || g >= int64(f.n) {
		return
	}
	if seen[g/64]&(1<<(g%64)) != 0 {
		f.dup.Add(1)
		return
	}
	seen[g/64] |= 1 << (g % 64)
	now := int64(time.Since(f.t0))
	h.Record(time.Duration(now - f.sendAt[g].Load()))
	f.delivAll.Add(1)
	if int(f.recv[g].Add(1)) == f.agents {
		f.deliv.Add(1)
	}
	for {
		l := f.last.Load()
		if now <= l || f.last.CompareAndSwap(l, now) {
			break
		}
	}
}

// done reports whether every sent message is answered and every acked one
// delivered.
func (f *flow) done() bool {
	a := f.acked.Load()
	return a+f.refused.Load() == f.sent.Load() && f.deliv.Load() == a
}

var (
	textKey = []byte(`"text":"kb:`)
	idKey   = []byte(`"id":"b`)
	typeAck = []byte(`"type":"ack"`)
	typeMsg = []byte(`"type":"message"`)
	// msgIDKey leads a message frame's message ID (the agent cursor).
	msgIDKey = []byte(`"message":{"id":`)
)

// appendSend appends the send frame of message g with a text of size bytes.
func appendSend(b []byte, g int64, size int) []byte {
	b = append(b, `{"type":"send","id":"b`...)
	b = strconv.AppendInt(b, g, 10)
	b = append(b, `","text":"kb:`...)
	n := len(b)
	b = strconv.AppendInt(b, g, 10)
	b = append(b, ';')
	for i := len(b) - n + 3; i < size; i++ { // the text is "kb:" + g + ";" + padding
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// schedule is when message k of a sender (0-based within the sender's
// share, sender v of V) is due, open loop at rate messages/s in all.
func schedule(k, v, visitors int, rate float64) time.Duration {
	return time.Duration(float64(k*visitors+v) / rate * float64(time.Second))
}

// runThroughput drives visitors → agents over WebSockets (or long polling
// when lp is set) and accounts for every message. With several servers
// (a cluster's nodes), visitors and agent connections are spread over them
// round-robin, so a message crosses nodes to reach the agents elsewhere.
func runThroughput(ctx context.Context, cfg Config, t target, lp bool) (*ThroughputResult, error) {
	ns := t.connect(cfg.Srcs)
	res := &ThroughputResult{Transport: "websocket", Mode: "closed", Visitors: cfg.Visitors, Agents: cfg.Agents}
	if lp {
		res.Transport = "longpoll"
	}
	if cfg.Rate > 0 {
		res.Mode, res.TargetRate = "open", cfg.Rate
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Idle connections held during the run.
	if cfg.Idle > 0 {
		var errs errCounts
		idle := openMany(ctx, ns.clients, cfg.Idle, cfg.Dialers, &errs)
		defer closeAll(idle)
		res.IdleHeld = len(idle)
		if len(idle) < cfg.Idle {
			return nil, fmt.Errorf("bench: opened %d of %d idle connections: %v", len(idle), cfg.Idle, errs.snapshot())
		}
	}

	f := newFlow(cfg.Messages, cfg.Agents)
	hists := make([]Hist, cfg.Agents)
	var agentsWG sync.WaitGroup
	var agentLinks []*agentLink
	for a := 0; a < cfg.Agents; a++ {
		c := ns.client(a)
		tok, err := c.login(ctx, cfg.Email, cfg.Password)
		if err != nil {
			return nil, err
		}
		cn, cur, err := c.dialSynced(ctx, "/ws/agent", agentHello(tok, -1), nil)
		if err != nil {
			return nil, fmt.Errorf("agent connection: %w", err)
		}
		seen := make([]uint64, (cfg.Messages+63)/64)
		agentsWG.Add(1)
		if lp {
			cn.close()
			p := &webtest.Poller{Client: c.wc, Token: tok, Agent: true}
			if cur >= 0 {
				p.Cursor.Cursor = &cur
			}
			go func(h *Hist) { defer agentsWG.Done(); pollAgent(ctx, p, f, seen, h) }(&hists[a])
		} else {
			l := &agentLink{c: c, token: tok, cn: cn, cursor: cur}
			agentLinks = append(agentLinks, l)
			defer l.close()
			go func(h *Hist) { defer agentsWG.Done(); l.read(ctx, f, seen, h) }(&hists[a])
		}
	}

	// Visitors: a session each, and a WebSocket (not for long polling).
	type visitor struct {
		cn  *wsConn
		p   *webtest.Poller
		sem chan struct{}
	}
	vs := make([]visitor, cfg.Visitors)
	for i := range vs {
		c := ns.client(i)
		tok, err := c.session(ctx)
		if err != nil {
			return nil, fmt.Errorf("visitor session: %w", err)
		}
		if lp {
			vs[i].p = &webtest.Poller{Client: c.wc, Token: tok}
			continue
		}
		if vs[i].cn, err = c.dial(ctx, "/ws/visitor", tok); err != nil {
			return nil, fmt.Errorf("visitor connection: %w", err)
		}
		defer vs[i].cn.close()
		vs[i].sem = make(chan struct{}, cfg.Window)
	}
	if cfg.Warmup {
		res.Warmup = true
		g, gctx := errgroup.WithContext(ctx)
		for i := range vs {
			g.Go(func() error {
				if vs[i].p != nil {
					_, err := vs[i].p.SendText(gctx, fmt.Sprint("w", i), 0, "warm-up", false)
					return err
				}
				_, _, err := vs[i].cn.startConversation(i)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		sleep(ctx, cfg.Settle) // the new conversations' routing is done
	}

	before, cpu0 := ns.sample(ctx), processCPU()
	f.t0 = time.Now()
	var sendWG, readWG sync.WaitGroup
	ackHists := make([]Hist, len(vs)) // each written by its visitor's reader, or sender (long polling)
	for v := range vs {
		vis := vs[v]
		if vis.cn != nil {
			readWG.Go(func() { readVisitor(vis.cn, f, vis.sem, &ackHists[v]) })
		}
		sendWG.Add(1)
		go func(v int) {
			defer sendWG.Done()
			buf := make([]byte, 0, cfg.Size+64)
			for k, g := 0, int64(v); g < int64(cfg.Messages) && ctx.Err() == nil; k, g = k+1, g+int64(cfg.Visitors) {
				if cfg.Rate > 0 {
					due := schedule(k, v, cfg.Visitors, cfg.Rate)
					if d := due - time.Since(f.t0); d > 0 {
						time.Sleep(d)
					}
					f.sendAt[g].Store(int64(due))
				} else if vis.sem != nil {
					select {
					case vis.sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
				buf = appendSend(buf[:0], g, cfg.Size)
				if cfg.Rate <= 0 {
					f.sendAt[g].Store(int64(time.Since(f.t0)))
				}
				f.state[g].Store(stSent)
				f.sent.Add(1)
				if vis.cn != nil {
					if err := vis.cn.write(buf); err != nil {
						f.errs.add(err)
						return
					}
					continue
				}
				sendLP(ctx, vis.p, buf, g, f, &ackHists[v])
			}
		}(v)
	}
	sendWG.Wait()
	deadline := time.Now().Add(cfg.Drain)
	for !f.done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	cpu1 := processCPU()
	after := ns.sample(ctx)
	cancel()
	for _, vis := range vs {
		if vis.cn != nil {
			vis.cn.close()
		}
	}
	readWG.Wait()
	for _, l := range agentLinks {
		l.close()
	}
	agentsWG.Wait() // agents stop when their connections close or ctx ends
	for _, l := range agentLinks {
		res.AgentReconnects += l.reconnects
	}

	res.Sent, res.Acked, res.Refused = f.sent.Load(), f.acked.Load(), f.refused.Load()
	res.Unanswered = res.Sent - res.Acked - res.Refused
	res.Delivered, res.Deliveries = f.deliv.Load(), f.delivAll.Load()
	res.Duplicates, res.OutOfOrder = f.dup.Load(), f.disorder.Load()
	res.Lost = res.Acked - res.Delivered
	if res.Lost < 0 { // delivered before its ack arrived, ack never came
		res.Lost = 0
	}
	res.Errors = f.errs.snapshot()
	res.Seconds = time.Duration(f.last.Load()).Seconds()
	if res.Seconds > 0 {
		res.MessagesPerSec = float64(res.Delivered) / res.Seconds
	}
	var all Hist
	for i := range hists {
		all.Merge(&hists[i])
	}
	res.Latency = all.Summary()
	var acks Hist
	for i := range ackHists {
		acks.Merge(&ackHists[i])
	}
	res.AckLatency = acks.Summary()
	res.Server, res.Nodes = ns.figures(before, after, 0)
	res.ServerCPUus, res.ClientCPUus = cpuPer(res.Server, cpu0, cpu1, res.Delivered)
	return res, nil
}

// readVisitor takes acks and refusals off a visitor connection.
func readVisitor(cn *wsConn, f *flow, sem chan struct{}, h *Hist) {
	for {
		fr, err := cn.read()
		if err != nil {
			return
		}
		var ok bool
		switch {
		case bytes.Contains(fr, typeAck):
			ok = true
		case bytes.Contains(fr, typeError):
			ok = false
		case bytes.Contains(fr, typePing):
			_ = cn.write(pongFrame)
			continue
		default:
			continue // its own message frame, receipts…
		}
		g, found := intField(fr, idKey)
		if !found {
			f.errs.add(fmt.Errorf("visitor frame without a send id: %.120s", fr))
			continue
		}
		if !ok {
			f.errs.add(fmt.Errorf("refused: %.120s", fr))
		}
		f.answered(g, ok, h)
		if sem != nil {
			select {
			case <-sem:
			default:
			}
		}
	}
}

// agentLink is one agent's WebSocket for a throughput run. When the
// server drops it (a slow consumer's queue overflowed, docs/protocol.md),
// it reconnects with the cursor of the last message it received, as a
// real client does, and the server replays what it missed.
type agentLink struct {
	c      *client
	token  string
	cursor int64 // the last message ID received (-1: none yet, from now on)

	mu     sync.Mutex
	cn     *wsConn
	closed bool

	reconnects int // read's goroutine; read after it ends
}

// close ends the link: its read loop returns and does not reconnect.
func (l *agentLink) close() {
	l.mu.Lock()
	l.closed = true
	cn := l.cn
	l.mu.Unlock()
	if cn != nil {
		cn.close()
	}
}

// read records the bench's messages arriving for the agent until the link
// is closed or ctx ends.
func (l *agentLink) read(ctx context.Context, f *flow, seen []uint64, h *Hist) {
	l.mu.Lock()
	cn := l.cn
	l.mu.Unlock()
	for {
		fr, err := cn.read()
		if err != nil {
			if cn = l.redial(ctx, f, seen, h); cn == nil {
				return
			}
			continue
		}
		if bytes.Contains(fr, typePing) {
			_ = cn.write(pongFrame)
			continue
		}
		l.message(fr, f, seen, h)
	}
}

// message records fr if it is one of the bench's messages.
func (l *agentLink) message(fr []byte, f *flow, seen []uint64, h *Hist) {
	if !bytes.Contains(fr, typeMsg) {
		return
	}
	if id, ok := intField(fr, msgIDKey); ok {
		if id > l.cursor {
			l.cursor = id
		} else if l.cursor >= 0 {
			f.disorder.Add(1)
		}
	}
	if g, ok := intField(fr, textKey); ok {
		f.received(g, seen, h)
	}
}

// redial replaces a connection the server ended; nil once the link is
// closed, ctx ends or the server refuses.
func (l *agentLink) redial(ctx context.Context, f *flow, seen []uint64, h *Hist) *wsConn {
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed || ctx.Err() != nil {
			return nil
		}
		if attempt == 5 {
			f.errs.add(errors.New("agent reconnect failed 5 times"))
			return nil
		}
		// The replay before synced is what the agent missed: recorded too.
		cn, cur, err := l.c.dialSynced(ctx, "/ws/agent", agentHello(l.token, l.cursor),
			func(fr []byte) { l.message(fr, f, seen, h) })
		if err != nil {
			f.errs.add(fmt.Errorf("agent reconnect: %w", err))
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			cn.close()
			return nil
		}
		l.cn = cn
		l.reconnects++
		l.mu.Unlock()
		if cur > l.cursor {
			l.cursor = cur
		}
		return cn
	}
}

// pollAgent long-polls for the bench's messages until ctx ends.
func pollAgent(ctx context.Context, p *webtest.Poller, f *flow, seen []uint64, h *Hist) {
	for ctx.Err() == nil {
		fs, err := p.Poll(ctx)
		if err != nil {
			if ctx.Err() == nil {
				f.errs.add(fmt.Errorf("agent poll: %w", err))
				sleep(ctx, 100*time.Millisecond)
			}
			continue
		}
		for _, fr := range fs {
			if fr.Type == "message" && fr.Message != nil && len(fr.Message.Text) > 3 && fr.Message.Text[:3] == "kb:" {
				if g, ok := parseDigits([]byte(fr.Message.Text[3:])); ok {
					f.received(g, seen, h)
				}
			}
		}
	}
}

// sendLP posts one send frame over long polling and records its answer.
func sendLP(ctx context.Context, p *webtest.Poller, frame []byte, g int64, f *flow, h *Hist) {
	fs, err := p.PostRaw(ctx, frame)
	if err != nil {
		f.errs.add(err)
		f.answered(g, false, nil)
		return
	}
	for _, fr := range fs {
		switch fr.Type {
		case "ack":
			f.answered(g, true, h)
		case "error":
			f.errs.add(fmt.Errorf("refused: %.120s", fr.Raw))
			f.answered(g, false, nil)
		}
	}
}
