package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/websocket"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// The realtime half of the web channel: visitor sessions, the hub fed from
// the bus's fan-out topic, and the two transports (WebSocket and long
// polling) of the protocol in docs/protocol.md.

// Routes.
const (
	pathSession = "/api/v1/visitor/session"
	pathHistory = "/api/v1/visitor/messages"
	pathWSVis   = "/ws/visitor"
	pathWSAgent = "/ws/agent"
	pathLPVis   = "/lp/visitor"
	pathLPAgent = "/lp/agent"
)

// realtime is the realtime half of a web channel instance.
type realtime struct {
	c     *Channel
	svc   *core.Service
	store core.Store
	log   *slog.Logger

	tokenKey []byte // visitor token key, derived from the channel's secret
	hub      *hub
	seq      *bridge.Sequencer // the feed loop's only
	names    *nameCache
	up       websocket.Upgrader
	writers  *writerPool
	aside    *asidePool // runs frames before hello (wsConn.onFrameAside)
	conns    *connSet
	connWG   sync.WaitGroup // WebSocket read loops
	leases   *leaseSet      // long-polling agents' presence
	// contactLeases: long-polling visitors' presence, by contact
	contactLeases *leaseSet

	ipLimit     *httpx.Limiter // requests per IP on visitor endpoints
	helloGate   helloGate      // agent sockets not yet authenticated, per IP
	msgLimit    *httpx.Limiter // messages per visitor
	convLimit   *httpx.Limiter // new visitor sessions per IP
	uploadLimit *httpx.Limiter // visitor upload MiB per IP
	signalLimit *httpx.Limiter // typing and receipt frames per visitor

	ready          chan struct{} // closed once the hub is fed and the writers run
	done           chan struct{} // closed when run ends
	stopping       chan struct{} // closed when the HTTP server or run begins to stop
	stopOnce       sync.Once
	servers        sync.Map // *http.Server → true: those that call beginShutdown
	ctx            context.Context
	cancel         context.CancelFunc
	checking       atomic.Bool // an agent session check is running
	stats          stats
	resequenceWait time.Duration
}

// stats are counters for tests and benchmarks (no metrics registry reaches
// channels yet).
type stats struct {
	slowConsumers atomic.Int64 // connections dropped for a full queue
	pingTimeouts  atomic.Int64 // connections dropped for silence
	badEnvelopes  atomic.Int64 // bus messages that were not update envelopes
}

func newRealtime(c *Channel) (*realtime, error) {
	cfg := c.cfg
	ctx, cancel := context.WithCancel(context.Background())
	rt := &realtime{
		c: c, svc: c.svc, store: c.store, log: c.log,
		tokenKey:      visitorTokenKey(c.secret),
		writers:       newWriterPool(),
		conns:         newConnSet(),
		leases:        newLeaseSet(),
		contactLeases: newLeaseSet(),
		ready:         make(chan struct{}),
		done:          make(chan struct{}),
		stopping:      make(chan struct{}),
		ctx:           ctx, cancel: cancel,
		resequenceWait: bridge.ResequenceWait,

		ipLimit:     httpx.NewLimiter(cfg.Limits.RequestsPerMinute, time.Minute, cfg.Limits.RequestsPerMinute),
		msgLimit:    httpx.NewLimiter(cfg.Limits.MessagesPerMinute, time.Minute, cfg.Limits.MessagesPerMinute),
		convLimit:   httpx.NewLimiter(cfg.Limits.ConversationsPerHour, time.Hour, cfg.Limits.ConversationsPerHour),
		uploadLimit: httpx.NewLimiter(cfg.Limits.UploadMBPerHour, time.Hour, cfg.Limits.UploadMBPerHour),
		signalLimit: httpx.NewLimiter(cfg.Limits.RequestsPerMinute, time.Minute, cfg.Limits.RequestsPerMinute),
	}
	rt.aside = newAsidePool(rt.done)
	rt.names = &nameCache{store: c.store, m: map[int64]nameEntry{}, now: c.now}
	rt.hub = newHub(c.name, rt.names.get)
	rt.up = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   wsReadBuffer,
		WriteBufferSize:  wsWriteBuffer,
		WriteBufferPool:  &sync.Pool{},
		CheckOrigin:      c.originAllowed,
		// Frames are small JSON; compression would cost CPU on every
		// connection and flate state, for little.
		EnableCompression: false,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			httpx.Error(w, status, httpx.CodeBadRequest, reason.Error())
		},
	}
	return rt, nil
}

// mount registers the realtime routes.
func (rt *realtime) mount(mux *http.ServeMux) {
	handle := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, rt.watch(h)) }
	handle("POST "+pathSession, rt.visitorEndpoint(onlyQuery(rt.serveSession)))
	handle("GET "+pathHistory, rt.visitorEndpoint(onlyQuery(rt.serveHistory, "conversation_id", "before_seq", "limit")))
	handle("OPTIONS "+pathSession, rt.preflight)
	handle("OPTIONS "+pathHistory, rt.preflight)
	handle("OPTIONS "+pathLPVis, rt.preflight)
	handle("GET "+pathWSVis, rt.serveWS(audVisitor))
	handle("GET "+pathWSAgent, rt.serveWS(audAgent))
	handle("GET "+pathLPVis, rt.visitorEndpoint(onlyQuery(rt.pollVisitor, "conversation_id", "last_seq")))
	handle("POST "+pathLPVis, rt.visitorEndpoint(onlyQuery(rt.postVisitor)))
	handle("GET "+pathLPAgent, onlyQuery(rt.pollAgent, "cursor"))
	handle("POST "+pathLPAgent, onlyQuery(rt.postAgent))
	allowOnly(mux, pathSession, "POST", "OPTIONS")
	allowOnly(mux, pathHistory, "GET", "OPTIONS")
	allowOnly(mux, pathWSVis, "GET")
	allowOnly(mux, pathWSAgent, "GET")
	allowOnly(mux, pathLPVis, "GET", "POST", "OPTIONS")
	allowOnly(mux, pathLPAgent, "GET", "POST")
}

// allowOnly answers the methods path does not take, which the methods'
// own patterns leave to it: 405 with Allow, in the JSON error shape (the
// ServeMux would answer in plain text, and under /api/v1/ the agent API's
// 404 would say there is no such endpoint).
func allowOnly(mux *http.ServeMux, path string, methods ...string) {
	if slices.Contains(methods, http.MethodGet) {
		methods = append(methods, http.MethodHead)
	}
	allow := strings.Join(methods, ", ")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, r.Method+" is not allowed here; allowed: "+allow)
	})
}

// onlyQuery refuses a request with a query parameter h does not take
// (keys), so that a misspelt one ("cursr") is a 400 rather than ignored.
func onlyQuery(h http.HandlerFunc, keys ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := checkQuery(r.URL.Query(), keys...); err != nil {
			httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, err.Error())
			return
		}
		h(w, r)
	}
}

// checkQuery reports the first query parameter of q that is not one of
// keys.
func checkQuery(q url.Values, keys ...string) error {
	for k := range q {
		if slices.Contains(keys, k) {
			continue
		}
		if len(keys) == 0 {
			return fmt.Errorf("unknown query parameter %q: this endpoint takes none", k)
		}
		return fmt.Errorf("unknown query parameter %q: this endpoint takes %s", k, strings.Join(keys, ", "))
	}
	return nil
}

// watch makes sure the HTTP server serving h tells the channel when it
// begins to shut down: long polls must answer at once (the server waits
// for them) and WebSockets, which it does not track, must close so that
// their clients move to another node.
func (rt *realtime) watch(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
			if _, seen := rt.servers.LoadOrStore(srv, true); !seen {
				srv.RegisterOnShutdown(rt.beginShutdown)
			}
		}
		h(w, r)
	}
}

// beginShutdown stops taking connections and long polls, answers waiting
// polls, and closes every WebSocket with 1001. It does not wait.
func (rt *realtime) beginShutdown() {
	rt.stopOnce.Do(func() { close(rt.stopping) })
	for _, c := range rt.conns.closeAll(nil) {
		go c.closeWith(closeGoingAway, "server shutting down")
	}
}

// run feeds the hub from the bus until ctx is done, and runs the writers
// and the wheel. On the way out it closes every connection (1001) and
// answers waiting long polls.
func (rt *realtime) run(ctx context.Context) error {
	defer rt.cancel()
	defer close(rt.done)
	msgs, err := rt.c.bus.FanoutSubscriber().Subscribe(ctx, bridge.UpdatesTopic)
	if err != nil {
		return fmt.Errorf("web: subscribe to updates: %w", err)
	}
	// Subscribed first, then the store's newest message: whatever is
	// committed later reaches the hub through msgs.
	last, err := bridge.LastMessageID(ctx, rt.store.Feed)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("web: read the newest message: %w", err)
	}
	rt.seq = bridge.NewSequencer(last, rt.resequenceWait, rt.store.Feed, rt.store.Conversation)
	rt.hub.released.Store(last)

	rt.writers.start(max(16, 8*runtime.GOMAXPROCS(0)))
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); rt.wheel(ctx) }()
	close(rt.ready)

	err = rt.feed(ctx, msgs)

	rt.shutdown()
	bg.Wait()
	rt.writers.close()
	return err
}

// feed passes bus updates through the sequencer to the hub. Each bus
// message is acked once the hub has it: the hub never blocks on a socket.
func (rt *realtime) feed(ctx context.Context, msgs <-chan *message.Message) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	arm := func() {
		d, ok := rt.seq.Deadline()
		if armed && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		armed = ok
		if ok {
			timer.Reset(time.Until(d))
		}
	}
	// A message whose publish was lost is found by the probe (see
	// bridge.Sequencer.Probe).
	probe := time.NewTicker(bridge.ProbeEvery)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-probe.C:
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := rt.seq.Probe(fctx, rt.c.now()); err != nil && ctx.Err() == nil {
				rt.log.Warn("web: reading the store for updates that never came failed", "err", err)
			}
			cancel()
			arm()
		case msg, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("web: the updates subscription ended")
			}
			env, err := bridge.Decode(msg)
			if err != nil || env.Kind != bridge.KindUpdates {
				rt.stats.badEnvelopes.Add(1)
				rt.log.Warn("web: dropped a malformed updates envelope", "uuid", msg.UUID, "err", err)
				msg.Ack()
				continue
			}
			now := rt.c.now()
			for _, u := range env.Updates {
				rt.seq.Add(u, now, rt.hub.dispatch)
			}
			msg.Ack()
			arm()
		case <-timer.C:
			armed = false
			if d, ok := rt.seq.Deadline(); ok && !rt.c.now().Before(d) {
				fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := rt.seq.Fill(fctx, rt.c.now(), rt.hub.dispatch); err != nil {
					rt.log.Warn("web: reading missing updates from the store failed; retrying", "err", err)
				} else if _, err := rt.seq.Probe(fctx, rt.c.now()); err != nil && ctx.Err() == nil {
					// More may follow what was read (a backlog).
					rt.log.Warn("web: reading the store for updates that never came failed", "err", err)
				}
				cancel()
			}
			arm()
		}
	}
}

// wheel is the one timer of all connections: every quarter ping interval it
// pings connections due for a ping, closes those silent for two intervals or
// without a hello in time, ends agent connections whose session expired,
// checks agent sessions are not revoked, and lets go of long-polling agents
// that stopped polling.
func (rt *realtime) wheel(ctx context.Context) {
	interval := rt.c.cfg.PingInterval
	t := time.NewTicker(interval / 4)
	defer t.Stop()
	var buf []*wsConn
	lastCheck := time.Now()
	var checks sync.WaitGroup
	defer checks.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		buf = rt.conns.snapshot(buf[:0])
		rt.tick(buf, now.UnixNano())
		rt.leases.expire(now)
		rt.contactLeases.expire(now)
		if now.Sub(lastCheck) >= interval && !rt.checking.Load() {
			lastCheck = now
			var agents []*wsConn
			for _, c := range buf {
				if c.kind == audAgent && c.authed.Load() && c.token != "" {
					agents = append(agents, c)
				}
			}
			if len(agents) > 0 {
				rt.checking.Store(true)
				checks.Add(1)
				go func() {
					defer checks.Done()
					defer rt.checking.Store(false)
					rt.checkAgents(ctx, agents)
				}()
			}
		}
		clear(buf)
	}
}

// tick is one turn of the wheel over conns at time now (unix nanoseconds).
func (rt *realtime) tick(conns []*wsConn, now int64) {
	interval := int64(rt.c.cfg.PingInterval)
	hello := min(int64(10*time.Second), 2*interval)
	for _, c := range conns {
		if c.dying.Load() {
			continue
		}
		switch {
		case !c.authed.Load():
			if now-c.born > hello {
				go c.closeWith(closeProtocol, "no hello in time")
			}
		case now-c.lastSeen.Load() > 2*interval:
			rt.stats.pingTimeouts.Add(1)
			go c.closeWith(closePingTimeout, codePingTimeout)
		case c.expires.Load() != 0 && now >= c.expires.Load():
			go c.closeWith(closeUnauthorized, codeSessionExpired)
		case now-c.lastPing >= interval:
			c.lastPing = now
			c.push(pingFrame)
		}
	}
}

// checkAgents closes agent connections whose session was revoked (or whose
// agent was deactivated) since they connected.
func (rt *realtime) checkAgents(ctx context.Context, agents []*wsConn) {
	for _, c := range agents {
		if ctx.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := rt.c.authenticateAgent(cctx, c.token)
		cancel()
		if errors.Is(err, errUnauthorized) {
			c.closeWith(closeUnauthorized, codeUnauthorized)
		}
	}
}

// shutdown closes every connection with 1001 and waits (bounded) for their
// read loops.
func (rt *realtime) shutdown() {
	rt.stopOnce.Do(func() { close(rt.stopping) })
	rt.cancel()
	conns := rt.conns.closeAll(nil)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.closeWith(closeGoingAway, "server shutting down") }()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { rt.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		rt.log.Warn("web: some connections did not end in time")
	}
	rt.leases.releaseAll()
	rt.contactLeases.releaseAll()
}

// waitReady waits until run has started feeding the hub.
func (rt *realtime) waitReady(ctx context.Context) bool {
	select {
	case <-rt.ready:
	case <-ctx.Done():
		return false
	case <-rt.stopping:
		return false
	case <-time.After(10 * time.Second):
		return false
	}
	select {
	case <-rt.stopping:
		return false
	default:
		return true
	}
}

// clientKey is the key of r's client in the visitor limits (see ipKey).
func (rt *realtime) clientKey(r *http.Request) string {
	return ipKey(httpx.ClientIP(r, rt.c.deps.TrustedProxies))
}

// maxUnhelloed is how many agent sockets one client address may hold
// before their hello authenticates them (within 10 s, tick): an
// office of agents reconnecting at once stays far below it, and one client
// cannot take the process's open files with sockets that never say who
// they are.
const maxUnhelloed = 64

// helloGate counts, per client address, the agent sockets upgraded and not
// yet authenticated.
type helloGate struct {
	mu sync.Mutex
	n  map[string]int
}

// enter counts one more socket for key, unless key has maxUnhelloed.
func (g *helloGate) enter(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n[key] >= maxUnhelloed {
		return false
	}
	if g.n == nil {
		g.n = map[string]int{}
	}
	g.n[key]++
	return true
}

// leave counts one socket of key's less: authenticated, or gone.
func (g *helloGate) leave(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n[key]--; g.n[key] <= 0 {
		delete(g.n, key)
	}
}

// allowRequest applies the per-IP request rate of the visitor endpoints,
// answering 429 with Retry-After when it is exceeded.
func (rt *realtime) allowRequest(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := rt.ipLimit.Allow(rt.clientKey(r))
	if !ok {
		httpx.TooMany(w, wait)
	}
	return ok
}

// visitorEndpoint wraps a public visitor endpoint: the Origin check and
// CORS headers, then the per-IP rate limit.
func (rt *realtime) visitorEndpoint(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !rt.cors(w, r) || !rt.allowRequest(w, r) {
			return
		}
		h(w, r)
	}
}

// cors refuses a browser page from an origin that is not allowed, and
// tells the browser an allowed one may read the answer.
func (rt *realtime) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !rt.c.originAllowed(r) {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "origin not allowed")
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	return true
}

// preflight answers a CORS preflight for the visitor endpoints.
func (rt *realtime) preflight(w http.ResponseWriter, r *http.Request) {
	if !rt.cors(w, r) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// readBody reads a JSON request body of at most max bytes.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &httpx.RequestError{Status: http.StatusUnsupportedMediaType, Code: httpx.CodeUnsupported, Msg: "Content-Type must be application/json"}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &httpx.RequestError{Status: http.StatusRequestEntityTooLarge, Code: httpx.CodeTooLarge, Msg: fmt.Sprintf("body over %d bytes", max)}
		}
		return nil, httpx.BadRequest("could not read the body")
	}
	return body, nil
}

// nameCache resolves agent ids to names for what visitors are shown.
type nameCache struct {
	store core.Store
	now   func() time.Time
	mu    sync.Mutex
	m     map[int64]nameEntry
}

type nameEntry struct {
	name string
	at   time.Time
}

const nameTTL = 5 * time.Minute

func (n *nameCache) get(id int64) string {
	now := n.now()
	n.mu.Lock()
	e, ok := n.m[id]
	n.mu.Unlock()
	if ok && now.Sub(e.at) < nameTTL {
		return e.name
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a, err := n.store.Agent(ctx, id)
	if err != nil {
		return e.name // the stale name, or none
	}
	n.mu.Lock()
	n.m[id] = nameEntry{name: a.Name, at: now}
	n.mu.Unlock()
	return a.Name
}

// leaseSet keeps long-polling clients present between polls: an agent (or
// a visitor's contact) counts as connected while polling and for two ping
// intervals after a poll ends. IDs are agents' or contacts', one kind per
// set.
type leaseSet struct {
	mu sync.Mutex
	m  map[int64]*lease
}

type lease struct {
	release func()
	polls   int       // polls in progress
	until   time.Time // when idle: when the lease ends
}

func newLeaseSet() *leaseSet { return &leaseSet{m: map[int64]*lease{}} }

// begin marks a poll of agent id as started; connect is called for the
// first. The returned function ends the poll, keeping the lease until grace
// after it.
func (s *leaseSet) begin(id int64, connect func() func(), grace time.Duration) func() {
	s.mu.Lock()
	l := s.m[id]
	first := l == nil
	if first {
		l = &lease{}
		s.m[id] = l
	}
	l.polls++
	s.mu.Unlock()
	if first {
		// Outside the lock: connecting may drain the routing queue.
		rel := connect()
		s.mu.Lock()
		l.release = rel
		s.mu.Unlock()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			l.polls--
			l.until = time.Now().Add(grace)
			s.mu.Unlock()
		})
	}
}

func (s *leaseSet) expire(now time.Time) {
	var done []func()
	s.mu.Lock()
	for id, l := range s.m {
		if l.polls == 0 && l.release != nil && now.After(l.until) {
			done = append(done, l.release)
			delete(s.m, id)
		}
	}
	s.mu.Unlock()
	for _, f := range done {
		f()
	}
}

func (s *leaseSet) releaseAll() {
	s.mu.Lock()
	m := s.m
	s.m = map[int64]*lease{}
	s.mu.Unlock()
	for _, l := range m {
		if l.release != nil {
			l.release()
		}
	}
}
