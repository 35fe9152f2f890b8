// Package redis is kefu's bus on Redis Streams (watermill-redisstream), for
// clusters of nodes that share one Redis. It implements bridge.Bus.
//
// # Streams
//
// Each topic is one stream, at key Options.Prefix + topic. Publish is XADD
// with an approximate MAXLEN (Options.MaxLen, default 100,000 entries per
// stream), so a stream never grows without bound. Trimming is by length,
// not by acknowledgement: an entry is dropped once 100,000 newer ones exist,
// acknowledged or not. kefu's work topics carry small kicks that are
// consumed within milliseconds, so in normal operation nothing unacked is
// anywhere near that deep; and the bus never holds the only copy of
// anything (the store does, and the outbox sweep finds what a lost kick
// announced).
//
// # Work topics: one consumer group for the cluster
//
// WorkSubscriber reads through the consumer group Options.Group ("kefu")
// with XREADGROUP, so each entry goes to one subscription in the cluster.
// The consumer name is Options.NodeID (node_id), stable across restarts. An
// entry is acknowledged (XACK) when the message is acked; until then it is
// pending for its consumer. A pending entry idle for Options.ClaimIdle (30 s)
// is taken over (XCLAIM) by whichever subscription's claim loop, running
// every Options.ClaimInterval (5 s), sees it first: messages a dead node left
// pending reach another node within ClaimIdle + ClaimInterval (35 s by
// default). A node that restarts under the same node_id takes its own
// pending entries back at once when it subscribes to the topic again,
// without waiting for ClaimIdle. The group is created at the start of the
// stream ("0") the first time anyone subscribes, so work published before
// any node subscribed is delivered (Features.Persistent).
//
// A handler that holds a work message longer than ClaimIdle may see it
// delivered again to another node; kefu's handlers are idempotent and ack
// within milliseconds (the Deliverer acks a kick once it has noted it).
//
// # Fan-out topics: no consumer group
//
// FanoutSubscriber reads with plain XREAD, each subscription on its own,
// starting after the stream's last entry at the moment Subscribe returns.
// Every subscription on every node therefore receives every later message,
// and a node that restarts does not replay the fan-out history: the
// sockets it serves resume from the store by sequence number instead, which
// is both cheaper and complete. (A consumer group per node would replay
// everything published while the node was down, and would split messages
// between two subscriptions of one node, which fan-out must not do.) Fan-out
// reads acknowledge nothing; a Nack resends the message to the same
// subscription after Options.NackDelay.
//
// # Order
//
// A subscription receives one message at a time, the next after the current
// one is acked, in stream order: OrderedPerTopic. A nacked message comes
// back before anything newer. A reclaimed work message arrives whenever it
// is claimed, possibly after newer ones.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kefuhq/kefu/bridge"
)

// Defaults of Options.
const (
	DefaultGroup         = "kefu"
	DefaultMaxLen        = 100_000
	DefaultClaimIdle     = 30 * time.Second
	DefaultClaimInterval = 5 * time.Second
	DefaultNackDelay     = 100 * time.Millisecond
	DefaultBlockTime     = 100 * time.Millisecond
	// minPoolSize is the connection pool size used when the URL sets none:
	// each live subscription keeps one connection busy in a blocking read.
	minPoolSize = 64
)

// Options configures a Bus. URL and NodeID are required; the rest have
// defaults suited to production, which tests shorten.
type Options struct {
	// URL is the Redis server, from bus.url: redis://[user:password@]host:port/db
	// or rediss:// for TLS. go-redis query parameters (pool_size,
	// dial_timeout, …) are honoured.
	URL string
	// NodeID is this node's consumer name in every work topic's consumer
	// group, from node_id. It must be unique in the cluster and stable
	// across restarts, so that a restarted node takes its own pending
	// messages back.
	NodeID string
	// Logger receives the bus's logs; nil: slog.Default().
	Logger *slog.Logger

	// Group is the consumer group that work topics are read through; every
	// node of one cluster must use the same. Default "kefu".
	Group string
	// Prefix is prepended to every topic to form its stream key, so that
	// several deployments (or test runs) can share one Redis database.
	// Default empty: the key is the topic ("kefu.updates").
	Prefix string
	// MaxLen is the approximate maximum number of entries kept per stream
	// (XADD MAXLEN ~). Default 100,000; negative: unbounded.
	MaxLen int64
	// MaxLens overrides MaxLen for the topics it names (topic names, without
	// Prefix).
	MaxLens map[string]int64
	// ClaimIdle is how long a work message may stay pending with its
	// consumer before another subscription takes it over. Default 30 s.
	ClaimIdle time.Duration
	// ClaimInterval is how often each work subscription looks for messages
	// pending longer than ClaimIdle. Default 5 s.
	ClaimInterval time.Duration
	// NackDelay is how long a nacked message waits before it is delivered
	// again to the same subscription. Default 100 ms.
	NackDelay time.Duration
	// BlockTime bounds one blocking read; it is also about how long a
	// subscription takes to end after its ctx is cancelled. Default 100 ms.
	BlockTime time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Group == "" {
		o.Group = DefaultGroup
	}
	if o.MaxLen == 0 {
		o.MaxLen = DefaultMaxLen
	}
	if o.ClaimIdle <= 0 {
		o.ClaimIdle = DefaultClaimIdle
	}
	if o.ClaimInterval <= 0 {
		o.ClaimInterval = DefaultClaimInterval
	}
	if o.NackDelay <= 0 {
		o.NackDelay = DefaultNackDelay
	}
	if o.BlockTime <= 0 {
		o.BlockTime = DefaultBlockTime
	}
}

// validate reports every problem at once.
func (o *Options) validate() error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("redis bus: URL is required (bus.url)"))
	}
	if strings.TrimSpace(o.NodeID) == "" {
		errs = append(errs, errors.New("redis bus: NodeID is required (node_id)"))
	}
	return errors.Join(errs...)
}

var clientNameUnsafe = regexp.MustCompile(`[^!-~]`) // anything but printable ASCII without space

// Bus is the Redis Streams bridge.Bus. Create it with New; close it with
// Close.
type Bus struct {
	opts   Options
	client *goredis.Client
	log    *slog.Logger
	pub    *redisstream.Publisher

	// ctx lives until Close; every subscription's context is derived from
	// it, so Close ends them all.
	ctx    context.Context
	cancel context.CancelFunc

	// mu is held for reading by Publish and Subscribe for their whole
	// duration, and for writing by Close while it marks the Bus closed: so
	// Close waits for publishes in flight, and no subscription starts after.
	mu     sync.RWMutex
	closed bool
	subs   sync.WaitGroup // one per live subscription

	workMu sync.Mutex
	work   map[string]int // live work subscriptions per stream key

	publisher publisher
	workSub   subscriber
	fanoutSub subscriber
}

// New connects to Redis (and checks the connection with PING) and returns a
// Bus.
func New(ctx context.Context, opts Options) (*Bus, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ro, err := goredis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redis bus: bus.url: %w", err)
	}
	if ro.PoolSize == 0 {
		ro.PoolSize = max(minPoolSize, 10*runtime.GOMAXPROCS(0))
	}
	// CLIENT SETNAME refuses spaces and control characters, and every
	// connection would fail with them.
	ro.ClientName = "kefu-" + clientNameUnsafe.ReplaceAllString(opts.NodeID, "_")
	client := goredis.NewClient(ro)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis bus: connect to %s: %w", ro.Addr, err)
	}
	maxlens := make(map[string]int64, len(opts.MaxLens))
	for topic, n := range opts.MaxLens {
		maxlens[opts.Prefix+topic] = n
	}
	defaultMaxLen := max(opts.MaxLen, 0) // 0 is "no MAXLEN" for XADD
	for k, n := range maxlens {
		if n < 0 {
			maxlens[k] = 0
		}
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:        noClose{client},
		Maxlens:       maxlens,
		DefaultMaxlen: defaultMaxLen,
	}, bridge.NewQuietWatermillLogger(opts.Logger))
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis bus: %w", err)
	}
	b := &Bus{
		opts:   opts,
		client: client,
		log:    opts.Logger,
		pub:    pub,
		work:   map[string]int{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.publisher = publisher{b}
	b.workSub = subscriber{b: b, work: true}
	b.fanoutSub = subscriber{b: b}
	return b, nil
}

// Publisher publishes to any topic: XADD, returning once Redis has the
// entries.
func (b *Bus) Publisher() message.Publisher { return b.publisher }

// WorkSubscriber subscribes through the cluster's consumer group.
func (b *Bus) WorkSubscriber() message.Subscriber { return b.workSub }

// FanoutSubscriber subscribes without a group: every subscription gets
// every message published after it subscribed.
func (b *Bus) FanoutSubscriber() message.Subscriber { return b.fanoutSub }

// Features: all of them. Persistent and RedeliversUnacked hold for work
// topics (the only ones that have them in the contract's sense).
func (b *Bus) Features() bridge.Features {
	return bridge.Features{Persistent: true, ConsumerGroups: true, OrderedPerTopic: true, RedeliversUnacked: true}
}

// Check pings Redis; /readyz uses it. It returns an error wrapping
// bridge.ErrBusClosed after Close.
func (b *Bus) Check(ctx context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("redis bus: %w", bridge.ErrBusClosed)
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis bus: ping: %w", err)
	}
	return nil
}

// Close waits for publishes in flight, ends every subscription, waits until
// their channels are closed and closes the connections. Work messages
// received and not acked stay pending and are reclaimed (see the package
// doc). Idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.subs.Wait()
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("redis bus: close: %w", err)
	}
	return nil
}

func (b *Bus) key(topic string) string { return b.opts.Prefix + topic }

func (b *Bus) publish(topic string, msgs ...*message.Message) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("redis bus: publish to %q: %w", topic, bridge.ErrBusClosed)
	}
	if err := b.pub.Publish(b.key(topic), detach(msgs)...); err != nil {
		return fmt.Errorf("redis bus: publish to %q: %w", topic, err)
	}
	return nil
}

// detach returns msgs with any message that carries a context of its own
// replaced by a copy without it: redisstream sends each XADD under the
// message's context, and a message received from a subscription and
// published on after its ack has a cancelled one. Publish ignores message
// contexts, as the memory and NATS buses do; go-redis's timeouts bound it.
func detach(msgs []*message.Message) []*message.Message {
	out := msgs
	for i, m := range msgs {
		if m.Context() == context.Background() {
			continue
		}
		if &out[0] == &msgs[0] {
			out = slices.Clone(msgs)
		}
		c := message.NewMessage(m.UUID, m.Payload)
		c.Metadata = m.Metadata
		out[i] = c
	}
	return out
}

func (b *Bus) subscribe(ctx context.Context, topic string, work bool) (<-chan *message.Message, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, fmt.Errorf("redis bus: subscribe to %q: %w", topic, bridge.ErrBusClosed)
	}
	key := b.key(topic)
	subCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	fail := func(err error) (<-chan *message.Message, error) {
		stop()
		cancel()
		return nil, fmt.Errorf("redis bus: subscribe to %q: %w", topic, err)
	}

	cfg := redisstream.SubscriberConfig{
		Client:       noClose{b.client},
		Unmarshaller: unmarshaller{},
		// Without it the first read blocks until a message arrives, and
		// go-redis cannot interrupt a blocking read when ctx ends.
		DisableIndefiniteInitialBlock: true,
		BlockTime:                     b.opts.BlockTime,
		NackResendSleep:               b.opts.NackDelay,
		ShouldStopOnReadErrors: func(err error) bool {
			if subCtx.Err() != nil || errors.Is(err, goredis.ErrClosed) {
				return true
			}
			if work && strings.HasPrefix(err.Error(), "NOGROUP") {
				// The stream or its group vanished (Redis restarted without
				// persistence, or someone deleted the key): make them again
				// and keep reading rather than failing every BlockTime.
				if cerr := b.createGroup(subCtx, key); cerr != nil {
					b.log.Warn("redis bus: recreate consumer group", "stream", key, "err", cerr)
				}
			}
			return false
		},
	}
	if work {
		cfg.ConsumerGroup = b.opts.Group
		cfg.Consumer = b.opts.NodeID
		cfg.OldestId = "0"
		cfg.MaxIdleTime = b.opts.ClaimIdle
		cfg.ClaimInterval = b.opts.ClaimInterval
		if b.addWork(key) == 1 {
			// No other subscription of this node holds messages of this
			// topic: what is pending under our name was left by an earlier
			// subscription or process and nobody will ack it.
			if err := b.retakeOwn(subCtx, key); err != nil {
				b.log.Warn("redis bus: could not take back this node's pending messages; they will be reclaimed after claim_idle",
					"stream", key, "err", err)
			}
		}
	} else {
		start, err := b.lastID(subCtx, key)
		if err != nil {
			return fail(err)
		}
		cfg.FanOutOldestId = start
	}
	rs, err := redisstream.NewSubscriber(cfg, subLogger{bridge.NewQuietWatermillLogger(b.log), subCtx})
	if err != nil {
		if work {
			b.doneWork(key)
		}
		return fail(err)
	}
	ch, err := rs.Subscribe(subCtx, key)
	if err != nil {
		if work {
			b.doneWork(key)
		}
		return fail(err)
	}
	b.subs.Add(1)
	go func() {
		defer b.subs.Done()
		<-subCtx.Done()
		if work {
			b.doneWork(key)
		}
		// Close waits until ch is closed; the client is shared, so noClose
		// keeps it open.
		if err := rs.Close(); err != nil {
			b.log.Warn("redis bus: end subscription", "stream", key, "err", err)
		}
		stop()
	}()
	return ch, nil
}

func (b *Bus) addWork(key string) int {
	b.workMu.Lock()
	defer b.workMu.Unlock()
	b.work[key]++
	return b.work[key]
}

func (b *Bus) doneWork(key string) {
	b.workMu.Lock()
	defer b.workMu.Unlock()
	if b.work[key]--; b.work[key] <= 0 {
		delete(b.work, key)
	}
}

func (b *Bus) createGroup(ctx context.Context, key string) error {
	err := b.client.XGroupCreateMkStream(ctx, key, b.opts.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// lastID returns the ID of the stream's last entry, "0-0" when it has none:
// a fan-out subscription reads what comes after. It is resolved before
// Subscribe returns, so a message published right after is not missed (an
// XREAD with "$" would only start from whatever is last when the read
// goroutine first runs).
func (b *Bus) lastID(ctx context.Context, key string) (string, error) {
	last, err := b.client.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("read the stream's last entry: %w", err)
	}
	if len(last) == 0 {
		return "0-0", nil
	}
	return last[0].ID, nil
}

// retakeOwn makes the entries pending under this node's consumer name
// claimable at once, by setting their idle time to ClaimIdle (XCLAIM to
// ourselves with IDLE). The subscription's first claim pass, which runs
// before its first read, then delivers them.
func (b *Bus) retakeOwn(ctx context.Context, key string) error {
	const page = 100
	start := "-"
	for {
		pending, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: key, Group: b.opts.Group, Consumer: b.opts.NodeID,
			Start: start, End: "+", Count: page,
		}).Result()
		if err != nil {
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				return nil // nobody subscribed yet: nothing pending
			}
			return err
		}
		if len(pending) == 0 {
			return nil
		}
		args := []any{"XCLAIM", key, b.opts.Group, b.opts.NodeID, 0}
		for _, p := range pending {
			args = append(args, p.ID)
		}
		args = append(args, "IDLE", b.opts.ClaimIdle.Milliseconds(), "JUSTID")
		if err := b.client.Do(ctx, args...).Err(); err != nil {
			return err
		}
		if len(pending) < page {
			return nil
		}
		start = "(" + pending[len(pending)-1].ID
	}
}

type publisher struct{ b *Bus }

// Publish appends the messages to the topic's stream.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs...)
}

// Close does nothing: the Bus owns the publisher (see bridge.Bus).
func (publisher) Close() error { return nil }

type subscriber struct {
	b    *Bus
	work bool
}

// Subscribe reads the topic's stream until ctx ends or the Bus is closed.
func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.b.subscribe(ctx, topic, s.work)
}

// Close does nothing: the Bus owns the subscriber (see bridge.Bus).
func (subscriber) Close() error { return nil }

// noClose shares the Bus's client with watermill's publisher and
// subscribers, whose Close would close it.
type noClose struct{ *goredis.Client }

func (noClose) Close() error { return nil }

// UnreadableKey is the metadata key set on a message the bus could not
// decode (an entry not written by a kefu publisher); its value says why.
// The message has an empty payload, so the consumer's envelope decoding
// fails and the message goes to its poison handling.
const UnreadableKey = "kefu_bus_unreadable"

// unmarshaller is watermill's, except that an entry it cannot decode becomes
// a message marked UnreadableKey instead of an error: redisstream ends the
// subscription on an unmarshal error, so one stray entry would stop a
// topic's consumers on every node.
type unmarshaller struct {
	redisstream.DefaultMarshallerUnmarshaller
}

func (u unmarshaller) Unmarshal(values map[string]any) (msg *message.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("panic: %v", r)
		}
		if err != nil {
			msg = message.NewMessage(watermill.NewUUID(), nil)
			msg.Metadata.Set(UnreadableKey, err.Error())
			err = nil
		}
	}()
	return u.DefaultMarshallerUnmarshaller.Unmarshal(values)
}

// subLogger is one subscription's logger: once the subscription's ctx has
// ended, redisstream's errors (a read cut short by the cancellation) are
// expected and logged at Debug.
type subLogger struct {
	watermill.LoggerAdapter
	ctx context.Context
}

func (l subLogger) Error(msg string, err error, fields watermill.LogFields) {
	if l.ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, goredis.ErrClosed) {
		l.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l subLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return subLogger{l.LoggerAdapter.With(fields), l.ctx}
}

var (
	_ bridge.Bus               = (*Bus)(nil)
	_ message.Publisher        = publisher{}
	_ message.Subscriber       = subscriber{}
	_ goredis.UniversalClient  = noClose{}
	_ redisstream.Unmarshaller = unmarshaller{}
	_ watermill.LoggerAdapter  = subLogger{}
)
