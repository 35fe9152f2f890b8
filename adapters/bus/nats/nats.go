// Package nats is kefu's bus on NATS JetStream, for clusters of nodes that
// share a NATS server or cluster. It implements bridge.Bus.
//
// Publishing goes through watermill-nats (pkg/nats, the mature path; its
// jetstream package is experimental) with its header marshaler. Subscribing
// uses nats.go's JetStream API directly, with the same wire format, because
// watermill-nats' Subscriber does not fit a shared, durable consumer group:
// it creates the durable consumer itself, and nats.go deletes a consumer it
// created when that subscription unsubscribes, so one node leaving would
// delete the whole cluster's consumer and its pending state; it also closes
// its output channel while a message callback may still send on it, and
// gives up on a message (without Nak) when AckWaitTimeout passes while the
// handler still holds it.
//
// # Stream
//
// One stream, Options.Stream ("KEFU"), holds every topic: topic T is the
// subject "KEFU.T". The stream is created if missing, with file storage,
// limits retention and discard-old: at most Options.MaxMsgsPerTopic
// (100,000) messages per subject and Options.MaxAge (24 h). Limits drop
// messages by count and age, acknowledged or not; kefu's work topics carry
// small kicks consumed within milliseconds, so unacked work never gets near
// either limit in normal operation, and the bus never holds the only copy
// of anything (the store does; the outbox sweep finds what a lost kick
// announced). A stream that already exists is used as it is, so operators
// may tune its limits and replicas with the nats CLI.
//
// # Work topics: one durable consumer for the cluster
//
// WorkSubscriber binds to a durable push consumer per topic, named from
// Options.Group ("kefu") and the topic, with a deliver group of the same
// name: every node's subscription joins the group and each message goes to
// one of them. The consumer is created (DeliverAll: work published before
// anyone subscribed is delivered) by the first node that subscribes, and
// never deleted by kefu. A message is acked (AckSync) when the handler acks
// it. While a handler holds a message, the subscription tells the server it
// is in progress every AckWait/3, so a slow handler on a live node is not
// redelivered elsewhere; a node that dies stops doing so, and the server
// redelivers what it held to another node after Options.AckWait (30 s):
// that is the reclaim bound. A subscription that ends normally (ctx
// cancelled, Close) Naks the message it holds, which is redelivered at once;
// messages the server had already sent it beyond that one (at most
// MaxAckPending) are redelivered after AckWait.
//
// # Fan-out topics: one ephemeral consumer per subscription
//
// FanoutSubscriber creates an ephemeral consumer for each subscription
// (DeliverNew), deleted when the subscription ends, or by the server
// Options.InactiveThreshold after the node died. Every subscription on every
// node receives every later message; a restarted node does not replay the
// fan-out history, its sockets resume from the store by sequence number.
//
// # Order and Nack
//
// A subscription receives one message at a time, in stream order
// (OrderedPerTopic). A Nack asks the server to redeliver the message after
// Options.NackDelay; messages the subscription had already been sent may
// arrive before it.
package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/kefuhq/kefu/bridge"
)

// Defaults of Options.
const (
	DefaultStream            = "KEFU"
	DefaultGroup             = "kefu"
	DefaultMaxMsgsPerTopic   = 100_000
	DefaultMaxAge            = 24 * time.Hour
	DefaultAckWait           = 30 * time.Second
	DefaultMaxAckPending     = 256
	DefaultNackDelay         = 100 * time.Millisecond
	DefaultInactiveThreshold = 10 * time.Minute

	// requestTimeout bounds one JetStream API request.
	requestTimeout = 10 * time.Second
)

// checkInterval is how often an idle subscription checks that its consumer
// still exists (a NATS server that lost its state, an ephemeral consumer
// removed during a long disconnection) and makes it again if not. Each
// reconnection checks at once too: a server that restarted without its
// state must not leave the fan-out consumers gone for this long (presence
// expires a silent node after 15 s). A variable for tests.
var checkInterval = 30 * time.Second

// reconnects tells the subscriptions that the connection came back.
type reconnects struct {
	mu   sync.Mutex
	next context.Context // ends at the next reconnection
	end  context.CancelFunc
}

func newReconnects() *reconnects {
	r := &reconnects{}
	r.next, r.end = context.WithCancel(context.Background())
	return r
}

// wait returns a context that ends at the next reconnection.
func (r *reconnects) wait() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

func (r *reconnects) happened() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.end()
	r.next, r.end = context.WithCancel(context.Background())
}

// Options configures a Bus. URL and NodeID are required; the rest have
// defaults suited to production, which tests shorten.
type Options struct {
	// URL is the NATS server, from bus.url: nats://[user:password@]host:port,
	// or several separated by commas.
	URL string
	// NodeID names this node's connection and fan-out consumers, from
	// node_id.
	NodeID string
	// Logger receives the bus's logs; nil: slog.Default().
	Logger *slog.Logger

	// Stream is the JetStream stream that holds every topic, and the first
	// token of every subject. Default "KEFU". Letters, digits, '-' and '_'.
	Stream string
	// Group names the durable consumers of work topics; every node of one
	// cluster must use the same. Default "kefu".
	Group string
	// Replicas is the stream's replica count when kefu creates it (a NATS
	// cluster of 3 wants 3). Default 1.
	Replicas int
	// MaxMsgsPerTopic limits the messages kept per topic when kefu creates
	// the stream. Default 100,000; negative: unlimited.
	MaxMsgsPerTopic int64
	// MaxAge limits how long messages are kept when kefu creates the
	// stream. Default 24 h; negative: unlimited.
	MaxAge time.Duration
	// AckWait is how long the server waits for the ack of a message a node
	// has stopped reporting progress on before it redelivers it. Default 30 s.
	AckWait time.Duration
	// MaxAckPending bounds the messages sent and not yet acked, per work
	// topic (for the whole cluster) and per fan-out subscription. Default 256.
	MaxAckPending int
	// NackDelay is how long a nacked message waits before it is
	// redelivered. Default 100 ms.
	NackDelay time.Duration
	// InactiveThreshold is how long the server keeps a fan-out consumer
	// whose node has gone. Default 10 min.
	InactiveThreshold time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Group == "" {
		o.Group = DefaultGroup
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxMsgsPerTopic == 0 {
		o.MaxMsgsPerTopic = DefaultMaxMsgsPerTopic
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.NackDelay <= 0 {
		o.NackDelay = DefaultNackDelay
	}
	if o.InactiveThreshold <= 0 {
		o.InactiveThreshold = DefaultInactiveThreshold
	}
}

// validate reports every problem at once.
func (o *Options) validate() error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("nats bus: URL is required (bus.url)"))
	}
	if strings.TrimSpace(o.NodeID) == "" {
		errs = append(errs, errors.New("nats bus: NodeID is required (node_id)"))
	}
	if !nameRE.MatchString(o.Stream) {
		errs = append(errs, fmt.Errorf("nats bus: Stream %q: only letters, digits, '-' and '_'", o.Stream))
	}
	if !nameRE.MatchString(o.Group) {
		errs = append(errs, fmt.Errorf("nats bus: Group %q: only letters, digits, '-' and '_'", o.Group))
	}
	return errors.Join(errs...)
}

// Bus is the NATS JetStream bridge.Bus. Create it with New; close it with
// Close.
type Bus struct {
	opts Options
	log  *slog.Logger
	conn *nats.Conn
	js   nats.JetStreamContext
	pub  *wmnats.Publisher
	// reconnected ends a subscription's wait for its next message, which
	// then checks its consumer; checkEvery is checkInterval when New ran.
	reconnected *reconnects
	checkEvery  time.Duration

	// ctx lives until Close; every subscription's context is derived from
	// it, so Close ends them all.
	ctx    context.Context
	cancel context.CancelFunc

	// mu is held for reading by Publish and Subscribe for their whole
	// duration, and for writing by Close while it marks the Bus closed.
	mu     sync.RWMutex
	closed bool
	subs   sync.WaitGroup // one per live subscription

	publisher publisher
	workSub   subscriber
	fanoutSub subscriber
}

// New connects to NATS, makes sure the stream exists and returns a Bus.
// The connection reconnects for ever; Check reports while it is down.
func New(ctx context.Context, opts Options) (*Bus, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	rc := newReconnects()
	conn, err := nats.Connect(opts.URL,
		nats.Name("kefu-"+opts.NodeID),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats bus: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats bus: reconnected", "server", c.ConnectedUrlRedacted())
			rc.happened()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			log.Warn("nats bus: async error", "subject", subject, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats bus: connect: %w", err)
	}
	js, err := conn.JetStream()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nats bus: jetstream: %w", err)
	}
	pub, err := wmnats.NewPublisherWithNatsConn(conn, wmnats.PublisherPublishConfig{
		Marshaler:         marshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		// No AutoProvision (it would look the stream up on every publish,
		// named after the topic); no TrackMsgID: deduplication by Nats-Msg-Id
		// is per stream, and one message may rightly go to two topics (a
		// handler forwarding it).
		JetStream: wmnats.JetStreamConfig{},
	}, bridge.NewQuietWatermillLogger(log))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nats bus: %w", err)
	}
	b := &Bus{opts: opts, log: log, conn: conn, js: js, pub: pub, reconnected: rc, checkEvery: checkInterval}
	if err := b.ensureStream(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.publisher = publisher{b}
	b.workSub = subscriber{b: b, work: true}
	b.fanoutSub = subscriber{b: b}
	return b, nil
}

// Publisher publishes to any topic, returning once JetStream has stored the
// messages.
func (b *Bus) Publisher() message.Publisher { return b.publisher }

// WorkSubscriber subscribes through the cluster's durable consumer.
func (b *Bus) WorkSubscriber() message.Subscriber { return b.workSub }

// FanoutSubscriber subscribes through an ephemeral consumer of its own:
// every subscription gets every message published after it subscribed.
func (b *Bus) FanoutSubscriber() message.Subscriber { return b.fanoutSub }

// Features: all of them. Persistent and RedeliversUnacked hold for work
// topics (the only ones that have them in the contract's sense).
func (b *Bus) Features() bridge.Features {
	return bridge.Features{Persistent: true, ConsumerGroups: true, OrderedPerTopic: true, RedeliversUnacked: true}
}

// Check reports whether the connection is up and JetStream answers for the
// stream; /readyz uses it. It returns an error wrapping bridge.ErrBusClosed
// after Close.
func (b *Bus) Check(ctx context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("nats bus: %w", bridge.ErrBusClosed)
	}
	if s := b.conn.Status(); s != nats.CONNECTED {
		return fmt.Errorf("nats bus: connection %s", s)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	if _, err := b.js.StreamInfo(b.opts.Stream, nats.Context(ctx)); err != nil {
		return fmt.Errorf("nats bus: stream %s: %w", b.opts.Stream, err)
	}
	return nil
}

// Close waits for publishes in flight, ends every subscription (Nak-ing the
// work messages they hold, for redelivery), waits until their channels are
// closed, flushes and closes the connection. Idempotent.
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
	err := b.conn.FlushTimeout(5 * time.Second)
	b.conn.Close()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("nats bus: close: %w", err)
	}
	return nil
}

// subject is the subject of a topic.
func (b *Bus) subject(topic string) string { return b.opts.Stream + "." + topic }

// durable is the name of a work topic's durable consumer and deliver group:
// the group and the topic with anything a consumer name may not hold
// replaced, plus a hash of the topic so that two topics never share it.
func (b *Bus) durable(topic string) string {
	h := fnv.New32a()
	h.Write([]byte(topic))
	safe := nameUnsafe.ReplaceAllString(topic, "_")
	if len(safe) > 100 {
		safe = safe[:100]
	}
	return fmt.Sprintf("%s_%s_%08x", b.opts.Group, safe, h.Sum32())
}

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// ensureStream creates the stream if it does not exist, and checks that an
// existing one takes the bus's subjects.
func (b *Bus) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	want := b.opts.Stream + ".>"
	info, err := b.js.StreamInfo(b.opts.Stream, nats.Context(ctx))
	if errors.Is(err, nats.ErrStreamNotFound) {
		cfg := &nats.StreamConfig{
			Name:              b.opts.Stream,
			Description:       "kefu bus: every topic T is subject " + want[:len(want)-1] + "T",
			Subjects:          []string{want},
			Retention:         nats.LimitsPolicy,
			Discard:           nats.DiscardOld,
			Storage:           nats.FileStorage,
			Replicas:          b.opts.Replicas,
			MaxMsgsPerSubject: max(b.opts.MaxMsgsPerTopic, -1),
			MaxAge:            max(b.opts.MaxAge, 0),
			MaxMsgs:           -1,
			MaxBytes:          -1,
		}
		info, err = b.js.AddStream(cfg, nats.Context(ctx))
		if err != nil && !errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("nats bus: create stream %s: %w", b.opts.Stream, err)
		}
		if err != nil { // created by another node meanwhile
			info, err = b.js.StreamInfo(b.opts.Stream, nats.Context(ctx))
		}
	}
	if err != nil {
		return fmt.Errorf("nats bus: stream %s: %w", b.opts.Stream, err)
	}
	for _, s := range info.Config.Subjects {
		if s == want {
			return nil
		}
	}
	return fmt.Errorf("nats bus: stream %s exists but does not take the subjects %s (it takes %v)",
		b.opts.Stream, want, info.Config.Subjects)
}

// ensureConsumer creates a work topic's durable consumer if it does not
// exist, and brings AckWait and MaxAckPending of an existing one in line
// with Options.
func (b *Bus) ensureConsumer(ctx context.Context, topic string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	name := b.durable(topic)
	info, err := b.js.ConsumerInfo(b.opts.Stream, name, nats.Context(ctx))
	if errors.Is(err, nats.ErrConsumerNotFound) {
		cfg := &nats.ConsumerConfig{
			Durable:     name,
			Description: "kefu work topic " + topic,
			// Deterministic, so that nodes creating it at once ask for the
			// same consumer (and the server treats the second as a no-op).
			DeliverSubject: "_KEFU_DELIVER." + b.opts.Stream + "." + name,
			DeliverGroup:   name,
			FilterSubject:  b.subject(topic),
			DeliverPolicy:  nats.DeliverAllPolicy,
			AckPolicy:      nats.AckExplicitPolicy,
			AckWait:        b.opts.AckWait,
			MaxDeliver:     -1,
			MaxAckPending:  b.opts.MaxAckPending,
			ReplayPolicy:   nats.ReplayInstantPolicy,
		}
		if info, err = b.js.AddConsumer(b.opts.Stream, cfg, nats.Context(ctx)); err != nil {
			// Another node may have made it first.
			info, err = b.js.ConsumerInfo(b.opts.Stream, name, nats.Context(ctx))
		}
	}
	if err != nil {
		return "", fmt.Errorf("consumer %s: %w", name, err)
	}
	if c := info.Config; c.AckWait != b.opts.AckWait || c.MaxAckPending != b.opts.MaxAckPending {
		c.AckWait, c.MaxAckPending = b.opts.AckWait, b.opts.MaxAckPending
		if _, err := b.js.UpdateConsumer(b.opts.Stream, &c, nats.Context(ctx)); err != nil {
			b.log.Warn("nats bus: could not update the consumer's ack_wait and max_ack_pending", "consumer", name, "err", err)
		}
	}
	return name, nil
}

func (b *Bus) publish(topic string, msgs ...*message.Message) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("nats bus: publish to %q: %w", topic, bridge.ErrBusClosed)
	}
	err := b.pub.Publish(b.subject(topic), msgs...)
	if err != nil && (errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
		// Nothing stores the subject: the stream is gone (a server that
		// lost its state). Make it again and retry once.
		if serr := b.ensureStream(context.Background()); serr == nil {
			err = b.pub.Publish(b.subject(topic), msgs...)
		}
	}
	if err != nil {
		return fmt.Errorf("nats bus: publish to %q: %w", topic, err)
	}
	return nil
}

func (b *Bus) subscribe(ctx context.Context, topic string, work bool) (<-chan *message.Message, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, fmt.Errorf("nats bus: subscribe to %q: %w", topic, bridge.ErrBusClosed)
	}
	subCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	s := &subscription{b: b, topic: topic, work: work, log: b.log.With("topic", topic, "work", work)}
	if err := s.open(subCtx); err != nil {
		stop()
		cancel()
		return nil, fmt.Errorf("nats bus: subscribe to %q: %w", topic, err)
	}
	out := make(chan *message.Message)
	b.subs.Add(1)
	go func() {
		defer b.subs.Done()
		defer stop()
		defer cancel()
		s.run(subCtx, out)
	}()
	return out, nil
}

// subscription is one Subscribe: a JetStream push subscription read by one
// goroutine, which hands its messages on one at a time.
type subscription struct {
	b     *Bus
	topic string
	work  bool
	log   *slog.Logger
	sub   *nats.Subscription
}

// open makes the consumer (for work topics, if missing) and subscribes.
func (s *subscription) open(ctx context.Context) error {
	b := s.b
	subject := b.subject(s.topic)
	if s.work {
		name, err := b.ensureConsumer(ctx, s.topic)
		if err != nil {
			return err
		}
		// Bound to a consumer it did not create, nats.go leaves the
		// consumer in place when this subscription unsubscribes.
		s.sub, err = b.js.QueueSubscribeSync(subject, name, nats.Bind(b.opts.Stream, name))
		return err
	}
	var err error
	s.sub, err = b.js.SubscribeSync(subject,
		nats.BindStream(b.opts.Stream),
		nats.DeliverNew(),
		nats.AckExplicit(),
		nats.AckWait(b.opts.AckWait),
		nats.MaxAckPending(b.opts.MaxAckPending),
		nats.MaxDeliver(-1),
		nats.InactiveThreshold(b.opts.InactiveThreshold),
		nats.Description("kefu fan-out on "+b.opts.NodeID),
		nats.Context(ctx),
	)
	return err
}

// run hands messages on until ctx ends, then unsubscribes (deleting the
// consumer of a fan-out subscription, keeping a work topic's) and closes
// out.
func (s *subscription) run(ctx context.Context, out chan<- *message.Message) {
	var held *nats.Msg // received, neither acked nor nacked when ctx ended
	defer close(out)
	defer func() {
		if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.log.Debug("nats bus: unsubscribe", "err", err)
		}
		// Give a work message back only now: Nak-ed while this subscription
		// was still in the deliver group, it could come straight back to
		// it and be dropped with it, to wait for AckWait.
		if held != nil && s.work && held.Reply != "" {
			if err := s.b.conn.Publish(held.Reply, []byte("-NAK")); err != nil {
				s.log.Debug("nats bus: give back a held message", "err", err)
			}
		}
	}()
	soon := 0 // checks left to make every second, after a reconnection
	// rc ends at the next reconnection, also one that comes while a message
	// is handed on or a check runs (it is taken again only once it ended).
	rc := s.b.reconnected.wait()
	for {
		if rc.Err() != nil { // reconnected since the last wait began
			rc = s.b.reconnected.wait()
			soon = 5
			s.check(ctx)
		}
		every := s.b.checkEvery
		if soon > 0 {
			// The server may answer for JetStream only a moment after it
			// accepts connections: check again for a few seconds.
			every = min(every, time.Second)
			soon--
		}
		waitCtx, cancel := context.WithTimeout(ctx, every)
		stop := context.AfterFunc(rc, cancel)
		nm, err := s.sub.NextMsgWithContext(waitCtx)
		stop()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			if rc.Err() == nil { // idle; a reconnection is checked above
				s.check(ctx)
			}
			continue
		case err != nil:
			s.log.Warn("nats bus: receive", "err", err)
			if errors.Is(err, nats.ErrBadSubscription) || errors.Is(err, nats.ErrConnectionClosed) {
				s.reopen(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if !s.handOn(ctx, nm, out) {
			held = nm
			return
		}
	}
}

// handOn passes one message to out and waits for its ack or nack, telling
// the server meanwhile that it is in progress. It returns false when ctx
// ended first, leaving the message to run to give back.
func (s *subscription) handOn(ctx context.Context, nm *nats.Msg, out chan<- *message.Message) bool {
	msg := unmarshal(nm)
	msgCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(msgCtx)
	progress := time.NewTicker(max(s.b.opts.AckWait/3, 10*time.Millisecond))
	defer progress.Stop()
	for {
		select {
		case out <- msg:
		case <-progress.C:
			_ = nm.InProgress()
			continue
		case <-ctx.Done():
			return false
		}
		break
	}
	for {
		select {
		case <-msg.Acked():
			var err error
			if s.work {
				// Wait for the server, so that a message acked is not
				// delivered again after this node stops.
				ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
				err = nm.AckSync(nats.Context(ackCtx))
				cancel()
			} else {
				err = nm.Ack()
			}
			if err != nil {
				s.log.Warn("nats bus: ack", "err", err)
			}
			return true
		case <-msg.Nacked():
			if err := nm.NakWithDelay(s.b.opts.NackDelay); err != nil {
				s.log.Warn("nats bus: nak", "err", err)
			}
			return true
		case <-progress.C:
			_ = nm.InProgress()
		case <-ctx.Done():
			return false
		}
	}
}

// check makes sure the subscription's consumer still exists, and opens the
// subscription again if not.
func (s *subscription) check(ctx context.Context) {
	var err error
	if s.work {
		ictx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err = s.b.js.ConsumerInfo(s.b.opts.Stream, s.b.durable(s.topic), nats.Context(ictx))
		cancel()
	} else {
		_, err = s.sub.ConsumerInfo()
	}
	if errors.Is(err, nats.ErrConsumerNotFound) || errors.Is(err, nats.ErrStreamNotFound) {
		s.log.Warn("nats bus: consumer gone; subscribing again", "err", err)
		s.reopen(ctx)
	}
}

// reopen replaces the subscription: the stream and consumer are made again
// if they are gone.
func (s *subscription) reopen(ctx context.Context) {
	_ = s.sub.Unsubscribe()
	for ctx.Err() == nil {
		err := s.b.ensureStream(ctx)
		if err == nil {
			err = s.open(ctx)
		}
		if err == nil {
			return
		}
		s.log.Warn("nats bus: subscribe again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

type publisher struct{ b *Bus }

// Publish stores the messages in the topic's subject.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs...)
}

// Close does nothing: the Bus owns the publisher (see bridge.Bus).
func (publisher) Close() error { return nil }

type subscriber struct {
	b    *Bus
	work bool
}

// Subscribe receives the topic's messages until ctx ends or the Bus is
// closed.
func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.b.subscribe(ctx, topic, s.work)
}

// Close does nothing: the Bus owns the subscriber (see bridge.Bus).
func (subscriber) Close() error { return nil }

// UnreadableKey is the metadata key set on a message the bus could not
// decode (one not written by a kefu publisher); its value says why. The
// message has an empty payload, so the consumer's envelope decoding fails
// and the message goes to its poison handling.
const UnreadableKey = "kefu_bus_unreadable"

// quotedHeader lists the metadata keys whose values travel Go-quoted: a
// NATS header value cannot hold CR or LF, and a poison reason (an error
// text) may.
const quotedHeader = "_kefu_quoted"

// marshaler is watermill-nats' header marshaler, with metadata values that
// a header cannot carry quoted.
type marshaler struct{}

func (marshaler) Marshal(topic string, msg *message.Message) (*nats.Msg, error) {
	if _, ok := msg.Metadata[quotedHeader]; ok {
		return nil, fmt.Errorf("metadata key %s is reserved by the nats bus", quotedHeader)
	}
	var quoted []string
	md := msg.Metadata
	for k, v := range msg.Metadata {
		if strings.ContainsAny(v, "\r\n") {
			if len(quoted) == 0 {
				md = make(message.Metadata, len(msg.Metadata)+1)
				for k2, v2 := range msg.Metadata {
					md[k2] = v2
				}
			}
			md[k] = strconv.Quote(v)
			quoted = append(quoted, k)
		}
	}
	if len(quoted) > 0 {
		md[quotedHeader] = strings.Join(quoted, ",")
		c := message.NewMessage(msg.UUID, msg.Payload)
		c.Metadata = md
		msg = c
	}
	return (&wmnats.NATSMarshaler{}).Marshal(topic, msg)
}

// unmarshal decodes a message; one that cannot be decoded becomes a
// message marked UnreadableKey rather than stopping anything.
func unmarshal(nm *nats.Msg) *message.Message {
	msg, err := (&wmnats.NATSMarshaler{}).Unmarshal(nm)
	if err == nil && msg.UUID == "" {
		err = errors.New("no message UUID header")
	}
	if err == nil {
		if q := msg.Metadata.Get(quotedHeader); q != "" {
			delete(msg.Metadata, quotedHeader)
			for _, k := range strings.Split(q, ",") {
				v, uerr := strconv.Unquote(msg.Metadata.Get(k))
				if uerr != nil {
					err = fmt.Errorf("metadata %q: %w", k, uerr)
					break
				}
				msg.Metadata.Set(k, v)
			}
		}
	}
	if err != nil {
		msg = message.NewMessage(watermill.NewUUID(), nil)
		msg.Metadata.Set(UnreadableKey, err.Error())
	}
	return msg
}

var (
	_ bridge.Bus         = (*Bus)(nil)
	_ message.Publisher  = publisher{}
	_ message.Subscriber = subscriber{}
	_ wmnats.Marshaler   = marshaler{}
)
