package web

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// WebSocket transport.
//
// Built for many idle connections (DESIGN.md: ≤ 12 KB per idle connection):
//   - the HTTP handler upgrades and returns; the connection's one goroutine
//     (its read loop) starts outside it, so net/http's per-request buffers
//     are released;
//   - small read buffers, and write buffers borrowed from a shared pool only
//     while a frame is being written;
//   - no writer goroutine per connection: frames wait in a bounded
//     per-connection queue of shared, pre-encoded frames, and a shared pool
//     of writers flushes queues under each connection's write mutex, with a
//     write deadline, each queue in one write to the socket (writeBatch);
//   - no timer per connection: one wheel (realtime.tick) pings, and closes
//     connections that fell silent, that never said hello, or whose agent
//     session ended.

const (
	wsReadBuffer  = 256
	wsWriteBuffer = 4096 // pooled: held only while writing
	writeWait     = 5 * time.Second
	closeWait     = time.Second
	// maxFlushRounds bounds how long one writer stays on one connection
	// before it lets the others go first.
	maxFlushRounds = 4
)

// cursorFilter drops message frames a client already has: after a resume,
// the frames that the replay sent and the hub sends again (the seam), and
// any repeat. A visitor's position is per conversation (sequence numbers),
// an agent's is one message ID. Frames other than messages pass.
type cursorFilter struct {
	agent  bool
	lastID int64
	seqs   []convSeq
}

type convSeq struct{ conv, seq int64 }

func (cf *cursorFilter) pass(f *frame) bool {
	if !f.msg {
		return true
	}
	if cf.agent {
		if f.id <= cf.lastID {
			return false
		}
		cf.lastID = f.id
		return true
	}
	for i := range cf.seqs {
		if cf.seqs[i].conv == f.conv {
			if f.seq <= cf.seqs[i].seq {
				return false
			}
			cf.seqs[i].seq = f.seq
			return true
		}
	}
	cf.seqs = append(cf.seqs, convSeq{f.conv, f.seq})
	return true
}

// at moves the visitor's position in conv forward to seq.
func (cf *cursorFilter) at(conv, seq int64) {
	for i := range cf.seqs {
		if cf.seqs[i].conv == conv {
			cf.seqs[i].seq = max(cf.seqs[i].seq, seq)
			return
		}
	}
	cf.seqs = append(cf.seqs, convSeq{conv, seq})
}

// lower moves the visitor's position in conv back to seq, if it is past
// it: a client's cursor ahead of the conversation (a restored database, a
// client's bug) would otherwise drop the messages that fill the gap.
func (cf *cursorFilter) lower(conv, seq int64) {
	for i := range cf.seqs {
		if cf.seqs[i].conv == conv {
			cf.seqs[i].seq = min(cf.seqs[i].seq, seq)
		}
	}
}

// wsConn is one WebSocket connection.
type wsConn struct {
	rt   *realtime
	ws   *websocket.Conn
	kind audience // which endpoint it came in on

	born     int64        // unix nanoseconds
	lastSeen atomic.Int64 // when the client last sent anything
	lastPing int64        // the wheel's goroutine only
	authed   atomic.Bool
	dying    atomic.Bool
	expires  atomic.Int64 // agents: when the session ends (unix nanoseconds)

	// Set by the read loop before the connection is registered; read-only
	// after.
	sub     sub
	peer    *peer
	token   string // agents: to check the session is still there
	preAuth *core.Agent
	gate    string // agents: the helloGate key this socket counts against until hello ("" once it does not)
	release func() // presence: the agent's console

	mu        sync.Mutex // guards the queue and the fields below
	queue     []*frame
	scheduled bool // in the writer pool's run queue, or being flushed
	held      bool // resuming: frames wait until the replay is written
	closed    bool
	// A visitor's contact counts this connection (learnContact) from
	// contactKnown until cleanup (cleaned) calls contactRelease.
	contactKnown, cleaned bool
	contactRelease        func()

	wmu    sync.Mutex // held while writing; guards filter
	filter cursorFilter
}

// serveWS upgrades a visitor or agent connection.
func (rt *realtime) serveWS(aud audience) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !rt.c.originAllowed(r) {
			httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "origin not allowed")
			return
		}
		if aud == audVisitor && !rt.allowRequest(w, r) {
			return
		}
		if !rt.waitReady(r.Context()) {
			httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "starting or stopping; retry")
			return
		}
		var pre *core.Agent
		var preExp time.Time
		tok := bearerToken(r)
		if aud == audAgent && tok != "" {
			a, s, err := rt.c.authenticateAgent(r.Context(), tok)
			if err != nil {
				httpx.FromError(w, rt.log, err)
				return
			}
			pre, preExp = &a, s.ExpiresAt
		}
		gate := ""
		if aud == audAgent && pre == nil {
			// Authenticated by its hello, within 10 s (tick): until then it
			// counts against its address (helloGate).
			gate = rt.clientKey(r)
			if !rt.helloGate.enter(gate) {
				httpx.TooMany(w, time.Second)
				return
			}
		}
		ws, err := rt.up.Upgrade(w, r, nil)
		if err != nil {
			if gate != "" {
				rt.helloGate.leave(gate)
			}
			return // Upgrade has answered
		}
		now := time.Now().UnixNano()
		c := &wsConn{rt: rt, ws: ws, kind: aud, born: now, lastPing: now, preAuth: pre, gate: gate}
		if pre != nil {
			c.token = tok
			c.expires.Store(preExp.UnixNano())
		}
		c.lastSeen.Store(now)
		if !rt.conns.add(c) {
			c.leaveGate()
			c.closeWith(closeGoingAway, "server shutting down")
			return
		}
		rt.connWG.Add(1)
		go c.serve()
	}
}

func (c *wsConn) touch() { c.lastSeen.Store(time.Now().UnixNano()) }

// serve is the connection's read loop: hello first, then frames until the
// connection ends.
//
// It is kept small on purpose: an idle connection's goroutine sits in
// ReadMessage, and its stack is what it uses there plus this frame. The
// work a frame causes (store reads, commits) runs in onFrame, whose deeper
// stack the runtime shrinks again at the next collections.
func (c *wsConn) serve() {
	defer c.rt.connWG.Done()
	defer c.cleanup()
	c.setup()
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		ok := false
		if c.peer == nil {
			ok = c.onFrameAside(typ, data)
		} else {
			ok = c.onFrame(typ, data)
		}
		if !ok {
			return
		}
	}
}

// onFrameAside runs onFrame on one of the aside pool's goroutines and waits
// for it. Until hello is done, frames go this way: authentication and the
// replay read the store through deep call chains. The stack they grow stays
// with the pool's goroutine, for the next connection's hello, instead of
// with every idle connection until collections shrink it; and it is not
// grown again, copy by copy, for every connection (6.7 % of the server's
// CPU in a run of new visitors' handshakes when each hello had a goroutine
// of its own, 3.0 % with the pool; BENCHMARKS.md, "Early morning").
func (c *wsConn) onFrameAside(typ int, data []byte) bool {
	done := make(chan bool, 1)
	c.rt.aside.run(func() { done <- c.onFrame(typ, data) })
	return <-done
}

// asidePool runs functions on goroutines kept between calls. A call goes
// to the goroutine that became idle last, or to a new one if none is idle,
// so the pool never makes a call wait for another; since the most recently
// idle are used first, the others stay idle under a steady load and end
// after idleFor (or once stop is closed): the pool keeps about as many as
// the calls that run at once.
type asidePool struct {
	mu      sync.Mutex
	idle    []*asideWorker // the last is the most recently idle
	idleFor time.Duration
	stop    <-chan struct{}
}

type asideWorker struct{ work chan func() }

const asideIdle = 10 * time.Second

func newAsidePool(stop <-chan struct{}) *asidePool {
	return &asidePool{idleFor: asideIdle, stop: stop}
}

func (p *asidePool) run(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.work <- f // buffered: it was idle, so this never waits
		return
	}
	p.mu.Unlock()
	go p.serve(&asideWorker{work: make(chan func(), 1)}, f)
}

func (p *asidePool) serve(w *asideWorker, f func()) {
	idle := time.NewTimer(p.idleFor)
	defer idle.Stop()
	for {
		f()
		f = nil // keep nothing of the last call while idle
		p.mu.Lock()
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		idle.Reset(p.idleFor)
		select {
		case f = <-w.work:
			continue
		case <-idle.C:
		case <-p.stop:
		}
		p.mu.Lock()
		if i := slices.Index(p.idle, w); i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		f = <-w.work // run took w as it was leaving: serve that call first
	}
}

func (c *wsConn) setup() {
	c.ws.SetReadLimit(c.rt.c.cfg.MaxFrameBytes)
	c.ws.SetPongHandler(func(string) error { c.touch(); return nil })
	c.ws.SetPingHandler(func(data string) error {
		c.touch()
		// A failed pong is not the reader's problem: a broken connection
		// fails the next read.
		_ = c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeWait))
		return nil
	})
}

// onFrame handles one frame and reports whether to read on.
//
//go:noinline
func (c *wsConn) onFrame(typ int, data []byte) bool {
	c.touch()
	// An idle connection's only traffic is the answer to the server's ping:
	// take it without the JSON decoder, so that it costs (and grows the
	// stack by) next to nothing.
	if c.peer != nil && typ == websocket.TextMessage && isFrameType(data, framePong) {
		return true
	}
	if typ != websocket.TextMessage {
		c.push(errorFrame(badFrame("frames are JSON text messages")))
		return true
	}
	f, perr := decodeFrame(data)
	if perr != nil {
		if c.peer == nil && perr.Code == codeUnknownType {
			c.fail(helloRequired()) // well-formed, and not hello
			return false
		}
		c.push(errorFrame(perr))
		return true
	}
	ctx := c.rt.ctx
	if c.peer == nil {
		if f.Type != frameHello {
			c.fail(helloRequired())
			return false
		}
		if err := c.start(ctx, &f); err != nil {
			if errors.Is(err, errWSClosing) || errors.Is(err, errWSLost) {
				// Closing, or gone: there is nobody to tell, and
				// nothing went wrong on our side.
				c.rt.log.Debug("web: connection lost during hello", "err", err)
				return false
			}
			c.fail(toProtoError(err, "", c.rt.log))
			return false
		}
		return true
	}
	if reply := c.peer.handle(ctx, &f); reply != nil {
		c.push(reply)
	}
	return true
}

// helloRequired is the error that closes a WebSocket whose first frame is
// not hello.
func helloRequired() *protoError {
	return &protoError{Code: codeHelloRequired, Msg: "the first frame must be hello", Close: closeProtocol}
}

// start authenticates a hello, registers the connection with the hub, and
// writes the welcome, the replay and synced before any live frame.
func (c *wsConn) start(ctx context.Context, f *inFrame) error {
	rt := c.rt
	p := &peer{rt: rt}
	if c.kind == audAgent {
		a, err := c.agentHello(ctx, f.Token)
		if err != nil {
			return err
		}
		p.agent = &a
		c.leaveGate()
		c.sub = sub{aud: audAgent, agentID: a.ID, out: c}
		c.release = rt.svc.Presence().Connect(a.ID)
		after := rt.hub.released.Load() // no cursor: from now on
		if f.Cursor != nil {
			after = *f.Cursor
		}
		c.filter = cursorFilter{agent: true, lastID: after}
	} else {
		v, err := rt.parseVisitor(f.Token)
		if err != nil {
			return &protoError{Code: codeUnauthorized, Msg: err.Error(), Close: closeUnauthorized}
		}
		p.vis = v
		// The visitor's connection counts for their contact (push
		// fallback asks whether they have a live socket on any node) from
		// when a conversation shows who they are: here, in the replay, or
		// at their first message.
		p.onContact = c.learnContact
		if f.ConversationID > 0 {
			c.filter.at(f.ConversationID, f.LastSeq)
		}
		c.sub = sub{aud: audVisitor, identity: v.identity, out: c, learn: c.learnContact}
	}
	c.peer = p
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
	// A visitor subscribes by identity, which every message of theirs
	// reaches, and claims the conversation it resumes for this connection
	// alone until the read below shows which conversations are theirs:
	// another of their connections must not hear of one that is not.
	rt.hub.register(&c.sub)
	if !p.isAgent() {
		rt.hub.claim(&c.sub, f.ConversationID)
	}
	c.authed.Store(true)
	var parts []replayPart
	if !p.isAgent() {
		var err error
		if parts, err = p.planReplay(ctx, f.ConversationID, f.LastSeq); err != nil {
			if errors.Is(err, core.ErrNotFound) {
				return &protoError{Code: codeNotFound, Msg: "no such conversation", Close: closeNotFound}
			}
			return err
		}
	}

	welcome := welcomeOut{Type: frameWelcome, PingIntervalMS: rt.c.cfg.PingInterval.Milliseconds(), MaxFrameBytes: rt.c.cfg.MaxFrameBytes}
	if p.isAgent() {
		welcome.Agent = &agentInfo{ID: p.agent.ID, Email: p.agent.Email, Name: p.agent.Name, Role: p.agent.Role}
	} else {
		welcome.Visitor = p.vis.info()
	}
	// The replay is written directly, ahead of anything queued; a client
	// taking it in is alive, so it counts as activity. The welcome, the
	// replay and synced go out in as few writes as writeBatch makes (one,
	// for a connection with nothing to replay).
	var pending []*frame
	size := 0
	write := func(f *frame) error {
		c.touch()
		pending = append(pending, f)
		if size += len(f.data); size < maxWireBatch {
			return nil
		}
		err := lost(c.writeBatch(pending))
		pending, size = pending[:0], 0
		return err
	}
	c.wmu.Lock()
	pending = append(pending, &frame{data: mustJSON(welcome)})
	var cur cursorOut
	var err error
	if p.isAgent() {
		var last int64
		last, err = p.replayAgent(ctx, c.filter.lastID, 0, write)
		cur = agentCursor(max(last, c.filter.lastID))
	} else {
		if len(parts) > 0 && parts[0].id == f.ConversationID {
			c.filter.lower(parts[0].id, parts[0].after) // a cursor ahead of the conversation
		}
		var conv, seq int64
		conv, seq, err = p.replayVisitor(ctx, parts, 0, write)
		cur = visitorCursor(conv, seq)
	}
	if err == nil {
		pending = append(pending, syncedFrame(cur))
	}
	if len(pending) > 0 {
		if werr := lost(c.writeBatch(pending)); err == nil {
			err = werr
		}
	}
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	c.unhold()
	return nil
}

func (c *wsConn) agentHello(ctx context.Context, tok string) (core.Agent, error) {
	if tok == "" && c.preAuth != nil {
		return *c.preAuth, nil
	}
	a, s, err := c.rt.c.authenticateAgent(ctx, tok)
	if err != nil {
		if errors.Is(err, errUnauthorized) {
			return a, &protoError{Code: codeUnauthorized, Msg: errUnauthorized.Msg, Close: closeUnauthorized}
		}
		return a, err
	}
	c.token = tok
	c.expires.Store(s.ExpiresAt.UnixNano())
	return a, nil
}

// fail tells the client what went wrong and, when the error says so,
// closes the connection with its code.
func (c *wsConn) fail(e *protoError) {
	c.wmu.Lock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	_ = c.ws.WriteMessage(websocket.TextMessage, errorFrame(e).data)
	c.wmu.Unlock()
	code := e.Close
	if code == 0 {
		code = closeProtocol
		if e.Code == codeInternal || e.Code == codeUnavailable {
			code = websocket.CloseInternalServerErr
		}
	}
	c.closeWith(code, e.Code)
}

// push implements outlet: it queues f without blocking. A connection whose
// queue is full is a slow consumer: it is dropped with closeSlowConsumer
// and resumes when it reconnects.
func (c *wsConn) push(f *frame) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.rt.c.cfg.sendQueue(c.kind) {
		c.closed, c.queue = true, nil
		c.mu.Unlock()
		c.rt.stats.slowConsumers.Add(1)
		go c.closeWith(closeSlowConsumer, codeSlowConsumer)
		return
	}
	c.queue = append(c.queue, f)
	sched := !c.held && !c.scheduled
	if sched {
		c.scheduled = true
	}
	c.mu.Unlock()
	if sched {
		c.rt.writers.submit(c)
	}
}

// unhold lets queued frames go once the replay is written.
func (c *wsConn) unhold() {
	c.mu.Lock()
	c.held = false
	sched := len(c.queue) > 0 && !c.scheduled && !c.closed
	if sched {
		c.scheduled = true
	}
	c.mu.Unlock()
	if sched {
		c.rt.writers.submit(c)
	}
}

// write writes one frame unless the filter drops it. wmu must be held.
func (c *wsConn) write(f *frame) error {
	if !c.filter.pass(f) {
		return nil
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
		return err
	}
	return nil
}

// flush writes the queue; called by a writer of the pool.
func (c *wsConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for round := 0; ; round++ {
		c.mu.Lock()
		batch := c.queue
		if len(batch) == 0 || c.held || c.closed {
			c.scheduled = false
			c.mu.Unlock()
			return
		}
		if round == maxFlushRounds {
			c.mu.Unlock()
			c.rt.writers.submit(c) // still scheduled: others first
			return
		}
		c.queue = nil
		c.mu.Unlock()
		if err := c.writeBatch(batch); err != nil {
			c.mu.Lock()
			c.closed, c.queue, c.scheduled = true, nil, false
			c.mu.Unlock()
			if !errors.Is(err, errWSClosing) {
				// closeWith, which stopped this batch, closes the
				// connection once its close frame is written: closing
				// here could cut that frame off.
				_ = c.ws.Close()
			}
			return
		}
	}
}

// Write coalescing. A busy connection (an agent's, under load) has many
// frames queued when a writer gets to it; writing them one WriteMessage at
// a time costs a write(2) each, the largest share of the WebSocket side in
// the throughput profile (BENCHMARKS.md). writeBatch instead lays the
// queued frames out as WebSocket frames in one pooled buffer and writes it
// to the socket at once.
//
// That is safe next to gorilla's own writes (hello replay and errors under
// wmu, control frames from any goroutine) because no compression is
// negotiated (the upgrader disables it), a server's frames are not masked,
// gorilla keeps no partial frame between its writes, and one Write on a
// net.Conn (TCP or TLS) is never interleaved with another's bytes.

// maxWireBatch is how many bytes writeBatch gathers before writing; it is
// also the largest buffer the pool keeps.
const maxWireBatch = 64 << 10

// wireBufs holds the buffers writeBatch gathers frames in: borrowed for one
// flush only, so an idle connection holds none.
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, wsWriteBuffer); return &b }}

// errWSClosing stops a batch on a connection being closed (its close frame
// may be on the wire: nothing may follow it).
var errWSClosing = errors.New("web: connection closing")

// errWSLost marks a write to the socket that failed: the client has gone
// (or stopped reading), which is not the server's error.
var errWSLost = errors.New("web: connection lost")

// lost marks a failed socket write (see errWSLost); errWSClosing and nil
// pass unchanged.
func lost(err error) error {
	if err == nil || errors.Is(err, errWSClosing) {
		return err
	}
	return fmt.Errorf("%w: %w", errWSLost, err)
}

// appendWireFrame appends payload as one final, unmasked text frame
// (RFC 6455 section 5.2).
func appendWireFrame(b, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// writeBatch writes the frames of batch that the cursor filter passes, in
// order, in one write to the socket per maxWireBatch bytes. wmu must be
// held.
func (c *wsConn) writeBatch(batch []*frame) error {
	bp := wireBufs.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() {
		if cap(b) <= 2*maxWireBatch {
			*bp = b[:0]
			wireBufs.Put(bp)
		}
	}()
	nc := c.ws.NetConn()
	if err := nc.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	flush := func() error {
		if c.dying.Load() {
			return errWSClosing
		}
		_, err := nc.Write(b)
		b = b[:0]
		return err
	}
	for _, f := range batch {
		if !c.filter.pass(f) {
			continue
		}
		b = appendWireFrame(b, f.data)
		if len(b) >= maxWireBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(b) == 0 {
		return nil
	}
	return flush()
}

// closeWith sends a close frame with code (best effort, bounded by
// closeWait) and closes the connection; its read loop then ends and cleans
// up. Only the first call does anything.
func (c *wsConn) closeWith(code int, reason string) {
	if !c.dying.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	c.closed, c.queue = true, nil
	c.mu.Unlock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWait))
	_ = c.ws.Close()
}

// learnContact counts the connection for the visitor's contact, once: push
// fallback asks whether the contact has a live socket on any node. The
// peer calls it when a conversation of its own shows the contact, the hub
// when it joins the connection to a conversation its identity began on
// another connection (another device).
func (c *wsConn) learnContact(id int64) {
	c.mu.Lock()
	if c.contactKnown || c.cleaned || id <= 0 {
		c.mu.Unlock()
		return
	}
	c.contactKnown = true
	c.mu.Unlock()
	release := c.rt.svc.Presence().ConnectContact(id)
	c.mu.Lock()
	if c.cleaned { // gone meanwhile
		c.mu.Unlock()
		release()
		return
	}
	c.contactRelease = release
	c.mu.Unlock()
}

// leaveGate stops counting the socket against its address's helloGate:
// its hello authenticated it, or it is gone. The read loop calls it (hello
// runs on its behalf, in turn with it).
func (c *wsConn) leaveGate() {
	if c.gate != "" {
		c.rt.helloGate.leave(c.gate)
		c.gate = ""
	}
}

// cleanup runs when the read loop ends.
func (c *wsConn) cleanup() {
	c.leaveGate()
	if c.peer != nil {
		c.rt.hub.unregister(&c.sub)
	}
	if c.release != nil {
		c.release()
	}
	c.mu.Lock()
	c.cleaned = true
	release := c.contactRelease
	c.contactRelease = nil
	c.mu.Unlock()
	if release != nil {
		release()
	}
	c.rt.conns.remove(c)
	c.mu.Lock()
	c.closed, c.queue = true, nil
	c.mu.Unlock()
	_ = c.ws.Close()
}

// writerPool is the shared pool of goroutines that write connections'
// queues. A connection is in the run queue at most once (its scheduled
// flag), so the run queue never holds more than the connections.
type writerPool struct {
	mu    sync.Mutex
	cond  sync.Cond
	ready []*wsConn
	head  int
	stop  bool
	wg    sync.WaitGroup
}

func newWriterPool() *writerPool {
	p := &writerPool{}
	p.cond.L = &p.mu
	return p
}

func (p *writerPool) start(n int) {
	for range n {
		p.wg.Add(1)
		go p.work()
	}
}

func (p *writerPool) submit(c *wsConn) {
	p.mu.Lock()
	p.ready = append(p.ready, c)
	p.mu.Unlock()
	p.cond.Signal()
}

func (p *writerPool) work() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		for p.head == len(p.ready) && !p.stop {
			p.cond.Wait()
		}
		if p.stop {
			p.mu.Unlock()
			return
		}
		c := p.ready[p.head]
		p.ready[p.head] = nil
		p.head++
		if p.head == len(p.ready) {
			p.ready, p.head = p.ready[:0], 0
		} else if p.head > 1024 && p.head*2 > len(p.ready) {
			n := copy(p.ready, p.ready[p.head:])
			clear(p.ready[n:])
			p.ready, p.head = p.ready[:n], 0
		}
		p.mu.Unlock()
		c.flush()
	}
}

// close stops the writers and waits for them.
func (p *writerPool) close() {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
}

// connSet holds the node's WebSocket connections, for the wheel and for
// shutdown.
type connSet struct {
	shards [16]struct {
		mu sync.Mutex
		m  map[*wsConn]struct{}
	}
	closed atomic.Bool
	n      atomic.Int64
}

func newConnSet() *connSet {
	s := &connSet{}
	for i := range s.shards {
		s.shards[i].m = map[*wsConn]struct{}{}
	}
	return s
}

func (s *connSet) shard(c *wsConn) int { return int(uint64(c.born) % uint64(len(s.shards))) }

func (s *connSet) add(c *wsConn) bool {
	sh := &s.shards[s.shard(c)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	sh.m[c] = struct{}{}
	s.n.Add(1)
	return true
}

func (s *connSet) remove(c *wsConn) {
	sh := &s.shards[s.shard(c)]
	sh.mu.Lock()
	if _, ok := sh.m[c]; ok {
		delete(sh.m, c)
		s.n.Add(-1)
	}
	sh.mu.Unlock()
}

// snapshot appends every connection to buf.
func (s *connSet) snapshot(buf []*wsConn) []*wsConn {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for c := range sh.m {
			buf = append(buf, c)
		}
		sh.mu.Unlock()
	}
	return buf
}

// closeAll refuses new connections and snapshots the current ones.
func (s *connSet) closeAll(buf []*wsConn) []*wsConn {
	for i := range s.shards {
		s.shards[i].mu.Lock()
	}
	s.closed.Store(true)
	for i := range s.shards {
		s.shards[i].mu.Unlock()
	}
	return s.snapshot(buf)
}
