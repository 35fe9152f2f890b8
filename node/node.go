// Package node assembles one kefu node from its config: the store, the bus,
// the core service, the enabled channels and their outbound delivery, and
// the HTTP server with health, readiness and metrics. cmd/kefu runs a Node;
// end-to-end tests run one in-process.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	natsbus "github.com/kefuhq/kefu/adapters/bus/nats"
	redisbus "github.com/kefuhq/kefu/adapters/bus/redis"
	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/push"
	"github.com/kefuhq/kefu/push/apns"
)

// ShutdownTimeout bounds how long a stopping node waits for in-flight
// requests and deliveries.
const ShutdownTimeout = 15 * time.Second

// Options tune a Node beyond its config (for tests and embedding).
type Options struct {
	Logger   *slog.Logger         // nil: a logger to stderr as the log section says
	Registry *prometheus.Registry // nil: a new registry with Go and process collectors
	// Listener, when set, is served instead of listening on server.addr.
	Listener net.Listener
	// LeaseTTL is the TTL of the cluster leases that single-node work runs
	// under (see node/lease.go); 0: bridge.DefaultLeaseTTL. Tests shorten it.
	LeaseTTL time.Duration
	// Clock is the time source of the push fallback's waits; nil: the wall
	// clock. Tests pass a fake one.
	Clock bridge.Clock
	// APNsClient, when set, replaces the APNs HTTP/2 client (tests pass
	// the fake APNs server's, which trusts its certificate).
	APNsClient *http.Client
}

// Node is one running kefu process.
type Node struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *bridge.Metrics
	store    core.Store
	bus      bridge.Bus
	mediaB   media.Backend
	media    *media.Store
	svc      *core.Service
	notifier *bridge.Notifier
	presence *bridge.ClusterPresence // nil on the in-process bus
	channels []channels.Channel
	senders  map[string]bridge.Sender
	pushers  []*push.Fallback
	pushTo   []string // the pushers' names (push.NAME), by index
	topics   []string // the pushers' topics: the apps customers may register devices for
	windows  map[string]time.Duration
	mux      *http.ServeMux
	ln       net.Listener
	idle     time.Duration      // server.idle_timeout
	leases   *bridge.HeldLeases // the cluster leases this node holds
	// workFailures counts the failures of leased work (runRetrying).
	workFailures *prometheus.CounterVec
	leaseTTL     time.Duration
	leaseClk     bridge.Clock // times the leases; nil: the wall clock (tests set it)

	closeOnce sync.Once
	closeErr  error

	readyMu   sync.Mutex
	lastReady string // what /readyz last found wrong, "" when ready
}

// New opens the store and bus, builds the core and the enabled channels,
// and binds the listen address. It does not serve until Run.
func New(ctx context.Context, cfg *config.Config, opt Options) (_ *Node, err error) {
	n := &Node{cfg: cfg, log: opt.Logger, reg: opt.Registry, senders: map[string]bridge.Sender{}, windows: map[string]time.Duration{}}
	if n.log == nil {
		n.log = NewLogger(cfg.Log, os.Stderr)
	}
	if n.reg == nil {
		n.reg = prometheus.NewRegistry()
		n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if n.metrics, err = bridge.NewMetrics(n.reg); err != nil {
		return nil, err
	}

	if n.store, err = openStore(ctx, cfg.Store, n.log); err != nil {
		return nil, err
	}
	if cfg.Store.Driver == "postgres" && cfg.Bus.Driver == "memory" {
		n.log.Warn("the store is PostgreSQL but the bus is in-process: run one node only. Nodes sharing this store " +
			"would not see each other's agents or live updates; a cluster needs bus.driver redis or nats (docs/operations.md)")
	}
	if n.bus, err = openBus(ctx, cfg.Bus, cfg.NodeID, n.log); err != nil {
		return nil, err
	}
	if n.mediaB, err = openMedia(ctx, cfg.Media, cfg.Store, n.log); err != nil {
		return nil, err
	}
	if n.media, err = media.New(n.mediaB, media.Options{MaxBytes: cfg.Media.MaxBytes}); err != nil {
		return nil, err
	}
	strategy, err := core.ParseStrategy(cfg.Routing.Strategy)
	if err != nil {
		return nil, err
	}
	n.notifier = bridge.NewNotifier(bridge.NotifierConfig{Node: cfg.NodeID, Publisher: n.bus.Publisher(), Logger: n.log, Metrics: n.metrics})
	var presence core.Presence = core.NewMemoryPresence()
	if n.bus.Features().ConsumerGroups {
		// A bus shared by nodes: presence is shared over it too, so that
		// routing and push see every node's sockets. The in-process bus
		// serves one node, whose memory presence is already complete.
		n.presence, err = bridge.NewClusterPresence(bridge.PresenceConfig{Node: cfg.NodeID, Bus: n.bus, Logger: n.log, Metrics: n.metrics})
		if err != nil {
			return nil, err
		}
		presence = n.presence
	}
	n.svc = core.NewService(core.Config{
		Strategy:        strategy,
		MaxOpenPerAgent: cfg.Routing.MaxOpenPerAgent,
		ReopenWithin:    cfg.Routing.ReopenWithin,
		OfflineReply:    cfg.Routing.OfflineReply,
		BusyReply:       cfg.Routing.BusyReply,
	}, core.Deps{
		Store:    n.store,
		Presence: presence,
		Notifier: countingNotifier{n.notifier, n.metrics},
		// Channels are built below; these read the maps they fill.
		Delivers: func(ch string) bool { _, ok := n.senders[ch]; return ok },
		Window:   func(ch string) time.Duration { return n.windows[ch] },
		Logger:   n.log,
	})
	if err := n.seedAgents(ctx); err != nil {
		return nil, err
	}
	if err := n.buildPushers(opt); err != nil {
		return nil, err
	}

	n.mux = http.NewServeMux()
	trusted, err := cfg.Server.TrustedPrefixes()
	if err != nil {
		return nil, err
	}
	deps := channels.Deps{Service: n.svc, Bus: n.bus, Media: n.media, Logger: n.log, PublicURL: cfg.Server.PublicURL, NodeID: cfg.NodeID, TrustedProxies: trusted, PushTopics: n.topics}
	for _, inst := range cfg.EnabledChannels() {
		ch, err := channels.New(inst, deps)
		if err != nil {
			return nil, err
		}
		n.channels = append(n.channels, ch)
		if h, ok := ch.(http.Handler); ok {
			n.mux.Handle("/webhooks/"+inst.Name, h)
		}
		if m, ok := ch.(channels.Mounter); ok {
			m.Mount(n.mux)
		}
		if s, ok := ch.(bridge.Sender); ok {
			n.senders[inst.Name] = s
		}
		if w, ok := ch.(channels.Windowed); ok {
			n.windows[inst.Name] = w.ReplyWindow()
		}
		if c, ok := ch.(prometheus.Collector); ok {
			if err := n.reg.Register(c); err != nil {
				return nil, fmt.Errorf("channel %s: metrics: %w", inst.Name, err)
			}
		}
	}
	n.shareTemplates()
	// A provider calling a name that is not an enabled channel instance (a
	// typo in its console, or a channel disabled since) is told so in the
	// JSON error shape.
	n.mux.HandleFunc("/webhooks/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, httpx.CodeNotFound, "no enabled channel serves "+r.URL.Path)
	})
	n.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	n.mux.HandleFunc("GET /readyz", n.serveReady)
	n.mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	n.registerGauges()
	if err := n.initLeases(opt); err != nil {
		return nil, err
	}

	n.ln = opt.Listener
	// A config built in code may leave it 0: net/http would then keep
	// idle connections for good.
	n.idle = cmp.Or(cfg.Server.IdleTimeout, config.DefaultIdleTimeout)
	if n.ln == nil {
		if n.ln, err = net.Listen("tcp", cfg.Server.Addr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Server.Addr, err)
		}
	}
	counted, err := newCountingListener(n.ln, n.reg)
	if err != nil {
		return nil, err
	}
	n.ln = counted
	return n, nil
}

func openStore(ctx context.Context, c config.Store, log *slog.Logger) (core.Store, error) {
	switch c.Driver {
	case "sqlite":
		s, err := sqlite.Open(ctx, sqlite.Options{Path: c.DSN, Sync: c.Sync, Logger: log})
		if err != nil { // not a typed nil in the interface: New's cleanup would close it
			return nil, err
		}
		return s, nil
	case "postgres":
		// store.sync does not apply: PostgreSQL's own settings
		// (synchronous_commit) decide what a commit survives.
		s, err := postgres.Open(ctx, postgres.Options{DSN: c.DSN, Logger: log})
		if err != nil { // not a typed nil in the interface
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("store.driver %q is not available in this build", c.Driver)
	}
}

func openBus(ctx context.Context, c config.Bus, nodeID string, log *slog.Logger) (bridge.Bus, error) {
	switch c.Driver {
	case "memory":
		return memory.New(log), nil
	case "redis":
		prefix := ""
		if c.Namespace != "" {
			prefix = c.Namespace + ":"
		}
		b, err := redisbus.New(ctx, redisbus.Options{URL: c.URL, NodeID: nodeID, Prefix: prefix, Logger: log,
			// Presence is read live (fan-out from the stream's end) and
			// repaired by snapshots: old entries serve nobody.
			MaxLens: map[string]int64{bridge.PresenceTopic: 10_000}})
		if err != nil { // not a typed nil in the interface
			return nil, err
		}
		return b, nil
	case "nats":
		b, err := natsbus.New(ctx, natsbus.Options{URL: c.URL, NodeID: nodeID, Stream: c.Namespace, Logger: log})
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("bus.driver %q is not available in this build", c.Driver)
	}
}

// seedAgents creates the config's agents on first start.
func (n *Node) seedAgents(ctx context.Context) error {
	seeds := make([]core.AgentSeed, len(n.cfg.Agents))
	for i, a := range n.cfg.Agents {
		seeds[i] = core.AgentSeed{Email: a.Email, Name: a.Name, Password: a.Password, Role: core.Role(a.Role), WeComUserID: a.WeComUserID, SlackUser: a.SlackUser}
	}
	created, err := n.svc.EnsureAgents(ctx, seeds)
	for _, a := range created {
		n.log.Info("agent created from config", "email", a.Email, "role", a.Role)
	}
	if err != nil {
		return fmt.Errorf("create configured agents: %w", err)
	}
	return nil
}

// buildPushers builds the push fallback of each enabled pusher (push.apns).
func (n *Node) buildPushers(opt Options) error {
	enabled := n.cfg.EnabledPushers()
	if len(enabled) == 0 {
		return nil
	}
	metrics, err := push.NewMetrics(n.reg)
	if err != nil {
		return err
	}
	// The fallback runs under a lease: what it sends after a stop must end
	// well inside the TTL/3 before another node may take over.
	leaseTTL := opt.LeaseTTL
	if leaseTTL == 0 {
		leaseTTL = bridge.DefaultLeaseTTL
	}
	apps := make([]string, len(enabled))
	for i, pi := range enabled {
		if c, ok := pi.Config.(*apns.Config); ok {
			apps[i] = c.Topic
		}
	}
	for i, pi := range enabled {
		c, ok := pi.Config.(*apns.Config)
		if !ok {
			return fmt.Errorf("push.%s: pusher type %q is not available in this build", pi.Name, pi.Type)
		}
		client, err := apns.New(c, apns.Options{HTTPClient: opt.APNsClient})
		if err != nil {
			return fmt.Errorf("push.%s: %w", pi.Name, err)
		}
		fb, err := push.New(push.Config{
			Pusher: client, Store: n.store, Presence: n.svc.Presence(), Bus: n.bus, Topics: push.TopicsOf(apps, i),
			FallbackAfter: c.FallbackAfter, StopGrace: leaseTTL / 6, Cursor: "push." + pi.Name + ".cursor",
			Clock: opt.Clock, Logger: n.log.With("pusher", pi.Name), Metrics: metrics.For(pi.Name),
		})
		if err != nil {
			return fmt.Errorf("push.%s: %w", pi.Name, err)
		}
		n.pushers = append(n.pushers, fb)
		n.pushTo = append(n.pushTo, pi.Name)
		n.topics = append(n.topics, c.Topic)
	}
	return nil
}

// shareTemplates lets channels that offer message templates to agents (the
// web console) list those of the customer channels that have them
// (WhatsApp), by instance name.
func (n *Node) shareTemplates() {
	type lister interface{ Templates() []string }
	type user interface {
		UseTemplates(func(channel string) []string)
	}
	byName := map[string]lister{}
	for _, ch := range n.channels {
		if l, ok := ch.(lister); ok {
			byName[ch.Name()] = l
		}
	}
	for _, ch := range n.channels {
		if u, ok := ch.(user); ok {
			u.UseTemplates(func(channel string) []string {
				if l, ok := byName[channel]; ok {
					return l.Templates()
				}
				return nil
			})
		}
	}
}

// Service returns the node's core service.
func (n *Node) Service() *core.Service { return n.svc }

// Addr returns the address the node listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Handler returns the node's HTTP handler.
func (n *Node) Handler() http.Handler { return n.mux }

// Run serves until ctx is done, then shuts down gracefully: it stops taking
// requests, lets in-flight requests and deliveries finish (bounded by
// ShutdownTimeout), and closes the bus and the store, which commits every
// queued write. Run closes the node.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	srv := &http.Server{Handler: n.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: n.idle,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}

	// Workers stop after the HTTP server has drained, so that a request
	// in flight can still hand work to them.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	// Agents' /on and away, as they left them, before any channel runs or
	// the first drain routes.
	if err := n.svc.RestorePresence(ctx); err != nil {
		return fmt.Errorf("restore agents' /on and away: %w", err)
	}
	g, gctx := errgroup.WithContext(workCtx)
	// Work that must run on one node of the cluster at a time runs under a
	// lease (node/lease.go); a fresh Deliverer or Follower each time the
	// lease comes to this node.
	var leased []leasedWork
	for name, s := range n.senders {
		dc := bridge.DelivererConfig{
			Channel: name, Sender: s, Store: n.store, Notify: n.notifier, Bus: n.bus, Logger: n.log, Metrics: n.metrics,
		}
		if err := dc.Validate(); err != nil {
			return fmt.Errorf("deliver %s: %w", name, err)
		}
		leased = append(leased, leasedWork{name: "deliver." + name, run: func(ctx context.Context) error {
			d, err := bridge.NewDeliverer(dc)
			if err != nil {
				return err
			}
			return d.Run(ctx)
		}})
	}
	for _, ch := range n.channels {
		if r, ok := ch.(channels.Runner); ok {
			if e, ok := ch.(channels.Exclusive); ok && e.Exclusive() {
				leased = append(leased, leasedWork{name: "run." + ch.Name(), run: r.Run})
			} else {
				g.Go(func() error { return r.Run(gctx) })
			}
		}
		if h, ok := ch.(bridge.FollowHandler); ok {
			fc := bridge.FollowerConfig{Name: ch.Name(), Handler: h, Store: n.store, Bus: n.bus, Logger: n.log}
			if _, err := bridge.NewFollower(fc); err != nil {
				return err
			}
			leased = append(leased, leasedWork{name: "follow." + ch.Name(), run: func(ctx context.Context) error {
				f, err := bridge.NewFollower(fc)
				if err != nil {
					return err
				}
				return f.Run(ctx)
			}})
		}
	}
	for i, p := range n.pushers {
		// Every node receives the fan-out updates: one pushes.
		leased = append(leased, leasedWork{name: "push." + n.pushTo[i], run: p.Run})
	}
	n.runLeased(gctx, g, leased)
	if n.presence != nil {
		g.Go(func() error { return n.presence.Run(gctx) })
	}
	g.Go(func() error { return n.svc.Run(gctx) })
	if err := n.svc.Drain(ctx); err != nil {
		n.log.Warn("routing: initial drain failed", "err", err)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(n.ln) }()
	n.log.Info("kefu listening", "addr", n.ln.Addr().String(), "channels", n.channelNames())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case <-gctx.Done():
		err = errors.New("a worker stopped")
	}
	n.log.Info("kefu shutting down")
	shCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if e := srv.Shutdown(shCtx); e != nil {
		n.log.Warn("http shutdown", "err", e)
	}
	stopWork()
	if e := g.Wait(); e != nil && !errors.Is(e, context.Canceled) {
		err = errors.Join(err, e)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, n.Close())
}

func (n *Node) channelNames() []string {
	names := make([]string, len(n.channels))
	for i, ch := range n.channels {
		names[i] = ch.Name()
	}
	sort.Strings(names)
	return names
}

// serveReady answers 200 when the store, the bus and every enabled channel
// are usable, 503 naming what is not.
func (n *Node) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	// The answer is public: the store's and the bus's errors, which may
	// name hosts, users or databases, go to the log only. The channels'
	// and pushers' checks say in kefu's words what an operator must fix
	// ("Slack rejects the bot token…").
	var lines, details []string
	problem := func(name string, err error, public bool) {
		details = append(details, name+": "+err.Error())
		if public {
			lines = append(lines, name+": "+err.Error())
		} else {
			lines = append(lines, name+": unavailable (the log says why)")
		}
	}
	if err := n.store.Ping(ctx); err != nil {
		problem("store", err, false)
	}
	if c, ok := n.bus.(interface{ Check(context.Context) error }); ok {
		if err := c.Check(ctx); err != nil {
			problem("bus", err, false)
		}
	}
	for _, ch := range n.channels {
		if c, ok := ch.(channels.Checker); ok {
			if err := c.Check(ctx); err != nil {
				problem("channel "+ch.Name(), err, true)
			}
		}
	}
	for _, p := range n.pushers {
		if err := p.Check(ctx); err != nil {
			problem("push", err, true)
		}
	}
	n.noteReadiness(details)
	if len(lines) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, strings.Join(lines, "\n")+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// noteReadiness logs what /readyz found when it changes (probes come every
// few seconds: the same problems are logged once).
func (n *Node) noteReadiness(details []string) {
	now := strings.Join(details, "; ")
	n.readyMu.Lock()
	changed := now != n.lastReady
	n.lastReady = now
	n.readyMu.Unlock()
	switch {
	case !changed:
	case now == "":
		n.log.Info("ready again")
	default:
		n.log.Warn("not ready", "problems", now)
	}
}

// registerGauges exports the nodes whose sockets presence counts, and the
// store's outbox and queue (storeGauges).
func (n *Node) registerGauges() {
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kefu_presence_nodes", Help: "Nodes whose sockets this node's presence counts, itself included (1 on the in-process bus).",
	}, func() float64 {
		if n.presence == nil {
			return 1
		}
		return float64(n.presence.Nodes())
	}))
	n.reg.MustRegister(storeGauges{store: n.store})
	if cs, ok := n.store.(commitStats); ok {
		n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kefu_store_commits_total", Help: "Transactions the store's writer ran, committed or rolled back (SQLite).",
		}, func() float64 { c, _ := cs.CommitStats(); return float64(c) }))
		n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kefu_store_writes_total", Help: "Writes those transactions held, failed ones included: divided by the commits, the writes per commit (SQLite).",
		}, func() float64 { _, w := cs.CommitStats(); return float64(w) }))
	}
}

// commitStats is a store that counts its group commits (SQLite's).
type commitStats interface {
	CommitStats() (commits, writes int64)
}

// Close releases the channels (those with a Close), the bus and the store.
// Run calls it once its workers have stopped; call it yourself only for a
// Node that never ran.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.ln != nil {
			_ = n.ln.Close()
		}
		// After the workers (Run has waited for them): a channel's Close
		// releases what its deliveries use (WeChat's api_base route).
		for _, ch := range n.channels {
			if c, ok := ch.(io.Closer); ok {
				errs = append(errs, c.Close())
			}
		}
		if n.bus != nil {
			errs = append(errs, n.bus.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		if c, ok := n.mediaB.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// The store's gauges, the same on every node: read when /metrics is
// scraped, -1 when the store cannot be read.
var (
	outboxDepthDesc = prometheus.NewDesc("kefu_outbox_depth",
		"Outbound entries not yet delivered (-1: the store could not be read).", nil, nil)
	outboxAgeDesc = prometheus.NewDesc("kefu_outbox_oldest_age_seconds",
		"Age of the oldest outbound entry not yet delivered, 0 when none: replies that have not reached their customers for that long (-1: the store could not be read).", nil, nil)
	queueLengthDesc = prometheus.NewDesc("kefu_queue_length",
		"Conversations waiting for an agent, counted up to 500 (-1: the store could not be read).", nil, nil)
	queueWaitDesc = prometheus.NewDesc("kefu_queue_oldest_wait_seconds",
		"How long the conversation first in the queue has waited for an agent, 0 when none (-1: the store could not be read).", nil, nil)
)

// storeGauges reads the outbox's and the queue's gauges from the store,
// once each per scrape.
type storeGauges struct{ store core.Store }

func (g storeGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- outboxDepthDesc
	ch <- outboxAgeDesc
	ch <- queueLengthDesc
	ch <- queueWaitDesc
}

func (g storeGauges) Collect(ch chan<- prometheus.Metric) {
	read := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 2*time.Second)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	age := func(t time.Time) float64 { return max(0, time.Since(t).Seconds()) }
	ctx, cancel := read()
	defer cancel()
	if depth, oldest, err := g.store.OutboxStats(ctx); err != nil {
		gauge(outboxDepthDesc, -1)
		gauge(outboxAgeDesc, -1)
	} else {
		gauge(outboxDepthDesc, float64(depth))
		oldestAge := 0.0
		if depth > 0 {
			oldestAge = age(oldest)
		}
		gauge(outboxAgeDesc, oldestAge)
	}
	ctx, cancel = read()
	defer cancel()
	if q, err := g.store.Queue(ctx, 500); err != nil {
		gauge(queueLengthDesc, -1)
		gauge(queueWaitDesc, -1)
	} else {
		gauge(queueLengthDesc, float64(len(q)))
		wait := 0.0
		if len(q) > 0 {
			wait = age(q[0].QueuedAt) // the queue is in serving order: oldest first
		}
		gauge(queueWaitDesc, wait)
	}
}

// countingNotifier counts committed customer messages per channel on their
// way to the bus.
type countingNotifier struct {
	*bridge.Notifier
	metrics *bridge.Metrics
}

func (c countingNotifier) Publish(ctx context.Context, ups ...core.Update) {
	for _, u := range ups {
		if u.Type == core.UpdateMessage && u.Message.SenderKind == core.SenderContact && u.Conversation != nil {
			c.metrics.MessageIn(u.Conversation.Channel)
		}
	}
	c.Notifier.Publish(ctx, ups...)
}

// NewLogger builds the process logger from the log section. Message bodies
// and secrets are never logged at info level.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
