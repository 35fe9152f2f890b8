package bridge

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/kefuhq/kefu/core"
)

// Sender sends outbound work to a channel instance's provider: a channel
// that delivers to customers (or notifies agents) through the outbox
// implements it, and a Deliverer calls it.
//
// Send is called for one entry at a time per outbox key, but concurrently
// for different keys, so it must be safe for concurrent use. ctx ends when
// the attempt times out or the Deliverer shuts down; Send should then
// return promptly (the entry is tried again later).
//
// The error decides what happens to the entry:
//   - nil: sent. The entry is finished and its message marked sent with
//     SendResult.ExternalID.
//   - Permanent(reason, err), or an error wrapping core.ErrWindowClosed:
//     it will never go through (window closed, user blocked the bot, bad
//     token). The entry is finished and its message marked failed with the
//     reason, which agents see.
//   - RetryAfter(d, err): the provider limits the rate; not tried before d.
//   - any other error: transient, tried again with exponential backoff.
//
// Delivery is at least once: after a crash between the provider accepting
// a message and the store recording it, the entry is sent again. A Sender
// that can pass an idempotency key to its provider should use the entry ID.
type Sender interface {
	Send(ctx context.Context, out Outgoing) (SendResult, error)
}

// MediaSender is a Sender whose payload entries may carry an attachment
// that Send uploads (a Work WeChat notification's image). HasMedia says
// which do, so that they get MediaSendTimeout and a media slot, as a
// message with an attachment does.
type MediaSender interface {
	Sender
	HasMedia(e core.OutboxEntry) bool
}

// Outgoing is one outbox entry to send, with what it refers to.
type Outgoing struct {
	Entry core.OutboxEntry
	// Message is the message to deliver; nil for payload entries.
	Message *core.Message
	// Conversation is Message's conversation (its Channel and ExternalID
	// say where the message goes); nil for payload entries.
	Conversation *core.Conversation
}

// SendResult is what a successful Send reports.
type SendResult struct {
	// ExternalID is the provider's id for the sent message (a wamid, a
	// Telegram message id), so status webhooks map back to it.
	ExternalID string
}

// PermanentError marks a failure that retrying cannot fix. Build it with
// Permanent.
type PermanentError struct {
	Reason string // shown to agents as the message's failure reason
	Err    error  // the underlying error, if any
}

func (e *PermanentError) Error() string {
	switch {
	case e.Err == nil:
		return e.Reason
	case e.Reason == "":
		return e.Err.Error()
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

// reason is what agents see.
func (e *PermanentError) reason() string {
	if e.Reason != "" {
		return e.Reason
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return "permanent failure"
}

// Permanent returns an error that marks the entry's message failed with
// reason (the provider's words, for agents) instead of retrying.
func Permanent(reason string, err error) error { return &PermanentError{Reason: reason, Err: err} }

// RetryAfterError asks for the next attempt no earlier than After from now.
// Build it with RetryAfter.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %s", e.After)
	}
	return fmt.Sprintf("retry after %s: %s", e.After, e.Err)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter returns an error for a provider's rate limit (HTTP 429 with
// retry_after): the entry is not tried again before d has passed. Only its
// own outbox key waits; other keys and channels go on.
func RetryAfter(d time.Duration, err error) error { return &RetryAfterError{After: d, Err: err} }

// Backoff bounds for DefaultBackoff.
const (
	BackoffBase = time.Second
	BackoffMax  = 5 * time.Minute
)

// DefaultBackoff is the wait after the attempt-th failed attempt of an entry
// (attempt ≥ 1): 1 s, 2 s, 4 s … doubling up to 5 min, each ±20 % at random
// so that entries which failed together do not retry together.
func DefaultBackoff(attempt int) time.Duration {
	d := BackoffMax
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 20 {
		d = min(BackoffBase<<(attempt-1), BackoffMax)
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, BackoffMax)
}

// DefaultSendTimeout bounds one Send of a message without an attachment. A
// channel's own request timeout must fit inside it: a request cut short by
// it is retried, and may have reached the provider.
const DefaultSendTimeout = 30 * time.Second

// DelivererConfig configures a Deliverer. Zero fields take the defaults noted.
type DelivererConfig struct {
	// Channel is the channel instance whose outbox entries this Deliverer
	// sends. Required.
	Channel string
	// Sender sends the entries. Required.
	Sender Sender
	// Store holds the outbox. Required.
	Store core.Store
	// Notify is told of each message whose status the delivery moved
	// (an UpdateStatus update). nil: nobody is told.
	Notify core.Notifier
	// Bus carries kicks on DeliverTopic(Channel), subscribed through
	// Bus.WorkSubscriber. nil: entries are found by sweeps only.
	Bus Bus
	// Workers is how many outbox keys are sent concurrently. Default 8.
	Workers int
	// Clock drives backoff timers and sweeps. nil: RealClock.
	Clock Clock
	// Logger. nil: slog.Default().
	Logger *slog.Logger
	// Metrics. nil: nothing is recorded.
	Metrics *Metrics
	// Backoff is the wait after an entry's attempt-th failed attempt.
	// nil: DefaultBackoff.
	Backoff func(attempt int) time.Duration
	// SweepInterval is how often the outbox is searched for due entries
	// (kicks lost, entries committed before a crash). Default 5 s.
	SweepInterval time.Duration
	// SweepLimit is how many due entries one sweep reads. Default 500.
	SweepLimit int
	// SendTimeout bounds one Send. Default DefaultSendTimeout.
	SendTimeout time.Duration
	// MediaSendTimeout bounds one Send of a message with an attachment,
	// which may upload it first: up to media.max_bytes on the server's
	// uplink. Default 5 min. At most half the Workers (at least one) send
	// attachments at once: sends that hang for this long leave the other
	// half to text.
	MediaSendTimeout time.Duration
	// ShutdownTimeout is how long Run waits for sends in flight when its
	// ctx ends before cancelling them, and again after. Default 10 s. A
	// Deliverer whose lease was lost cancels them at once (see Run).
	ShutdownTimeout time.Duration
	// GiveUpAfter is how long after its commit an entry that keeps failing
	// transiently is given up: its message is marked failed ("not delivered
	// within …") so the agent sees it and can resend. Default 24 h.
	GiveUpAfter time.Duration
}

func (c *DelivererConfig) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 5 * time.Second
	}
	if c.SweepLimit <= 0 {
		c.SweepLimit = 500
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.MediaSendTimeout <= 0 {
		c.MediaSendTimeout = 5 * time.Minute
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = 24 * time.Hour
	}
}

// Validate reports every missing required field.
func (c DelivererConfig) Validate() error {
	var errs []error
	if c.Channel == "" {
		errs = append(errs, errors.New("Channel is empty"))
	}
	if c.Sender == nil {
		errs = append(errs, errors.New("Sender is nil"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("Store is nil"))
	}
	return errors.Join(errs...)
}

const (
	// storeTimeout bounds one store call of the Deliverer.
	storeTimeout = 10 * time.Second
	// storeRetryDelay is how long a key waits after a store read failed.
	storeRetryDelay = time.Second
	// maxLastError bounds the error text kept in an outbox entry.
	maxLastError = 1000
)

// Deliverer sends one channel instance's outbox entries through its Sender.
//
// The outbox row is the durable state; the bus only carries kicks. A kick
// (from DeliverTopic, a sweep, or a backoff timer) names an outbox key; the
// Deliverer then sends that key's entries strictly in ID order, one at a
// time, starting from the key's head (Store.OutboxHead), while up to Workers
// keys are sent concurrently. A key whose head is backing off (a transient
// failure, a rate limit) releases its worker and is kicked again by a timer
// at the head's NextAttemptAt, so it never holds up other keys, and other
// channels have Deliverers of their own.
//
// Within one process an entry is never sent twice at once. A cluster needs
// more: kicks go to one node (DeliverTopic is a work topic), but every node
// that ran a Deliverer for the channel would sweep, and two nodes could find
// the same due entry. So a channel's Deliverer runs on one node at a time,
// under the cluster lease "deliver.CHANNEL" (RunLeased; node.Run does this),
// a fresh Deliverer each time the lease comes to a node.
type Deliverer struct {
	cfg     DelivererConfig
	log     *slog.Logger
	metrics *Metrics
	clock   Clock
	running atomic.Bool
	// sweepNow asks the scheduler for a sweep before its time: a
	// subscription made late may have missed kicks.
	sweepNow atomic.Bool

	// baseCtx (Run's ctx without its cancellation) carries values to store
	// calls; sendCtx is cancelled when shutdown's grace period is over.
	baseCtx context.Context
	sendCtx context.Context

	mu       sync.Mutex
	keys     map[string]*keyState // keys being sent or waiting for a worker
	ready    []string             // keys waiting for a worker, oldest first
	active   int                  // lanes running
	stopping bool
	// mediaActive counts the sends of attachments under way, at most
	// mediaMax; the keys whose head is an attachment that found them all
	// taken wait in mediaWaiting (oldest first, once each) for a kick.
	mediaActive  int
	mediaMax     int
	mediaWaiting []string
	lanes        sync.WaitGroup

	tmu    sync.Mutex
	timers timerHeap            // backoff wake-ups, earliest first
	due    map[string]time.Time // the earliest wake-up per key
	wake   chan struct{}        // pokes the scheduler when an earlier timer is set
}

// keyState is one key that has work: running in a lane, or waiting in ready.
type keyState struct {
	running bool
	// dirty: kicked while running; the lane looks at the key's head again
	// before letting it go, so a kick that raced the lane's last read is not
	// lost.
	dirty bool
}

// NewDeliverer returns a Deliverer; Run starts it.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge.NewDeliverer: %w", err)
	}
	cfg.setDefaults()
	return &Deliverer{
		cfg:      cfg,
		log:      cfg.Logger.With("channel", cfg.Channel),
		metrics:  cfg.Metrics,
		clock:    cfg.Clock,
		keys:     map[string]*keyState{},
		due:      map[string]time.Time{},
		mediaMax: max(1, cfg.Workers/2),
		wake:     make(chan struct{}, 1),
	}, nil
}

// Run delivers until ctx ends: it subscribes to DeliverTopic(Channel),
// sweeps the outbox at once and every SweepInterval, and sends what is due.
// When ctx ends it stops taking work, waits up to ShutdownTimeout for sends
// in flight to finish and be recorded, then cancels the rest (they are
// recorded as failed attempts) and waits up to ShutdownTimeout again. When
// ctx ends because the Deliverer's lease was lost (its cause is
// ErrLeaseLost, see RunLeased), there is no grace: another node may start
// sending the same entries a third of the lease's TTL later, so sends in
// flight are cancelled at once, and only their recording is waited for.
// It returns nil after a clean stop, and an error if a Sender ignored the
// cancellation. Run may be called once.
func (d *Deliverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("bridge: Deliverer.Run called twice")
	}
	d.baseCtx = context.WithoutCancel(ctx)
	sendCtx, cancelSends := context.WithCancel(d.baseCtx)
	defer cancelSends()
	d.sendCtx = sendCtx

	// Subscribed before the first sweep: what that sweep misses comes as a
	// kick. A bus that is down does not stop delivery: the sweeps deliver
	// while the subscription is made again in the background.
	var kicks <-chan *message.Message
	var subErr error
	if d.cfg.Bus != nil {
		kicks, subErr = d.cfg.Bus.WorkSubscriber().Subscribe(ctx, DeliverTopic(d.cfg.Channel))
	}

	var loops sync.WaitGroup
	loops.Go(func() { d.schedule(ctx) })
	if d.cfg.Bus != nil {
		loops.Go(func() { d.listen(ctx, kicks, subErr) })
	}
	<-ctx.Done()
	leaseLost := errors.Is(context.Cause(ctx), ErrLeaseLost)
	if leaseLost {
		d.log.Warn("deliver: lease lost; cancelling sends in flight at once")
		cancelSends()
	}
	loops.Wait()

	d.mu.Lock()
	d.stopping = true
	for _, k := range d.ready {
		delete(d.keys, k)
	}
	d.ready = nil
	d.mu.Unlock()

	done := make(chan struct{})
	go func() { d.lanes.Wait(); close(done) }()
	if !leaseLost {
		select {
		case <-done:
			return nil
		case <-time.After(d.cfg.ShutdownTimeout):
		}
		d.log.Warn("deliver: cancelling sends still running at shutdown")
		cancelSends()
	}
	select {
	case <-done:
		return nil
	case <-time.After(d.cfg.ShutdownTimeout):
		return fmt.Errorf("deliver %s: sends still running %s after shutdown began, although cancelled",
			d.cfg.Channel, 2*d.cfg.ShutdownTimeout)
	}
}

// listen consumes kicks, the subscription Run made (nil after subErr),
// until ctx ends. A subscription that fails or ends is made again, waiting
// from 1 s up to 30 s between tries, and a new one asks for a sweep at
// once; meanwhile the sweeps deliver.
func (d *Deliverer) listen(ctx context.Context, kicks <-chan *message.Message, subErr error) {
	wait := time.Second
	for {
		if subErr == nil {
			d.consume(ctx, kicks)
			wait = time.Second
		} else if ctx.Err() == nil {
			d.log.Error("deliver: cannot subscribe to the bus; delivering from sweeps only until it can", "retry_in", wait, "err", subErr)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.clock.At(d.clock.Now().Add(wait)):
		}
		wait = min(2*wait, 30*time.Second)
		if kicks, subErr = d.cfg.Bus.WorkSubscriber().Subscribe(ctx, DeliverTopic(d.cfg.Channel)); subErr == nil {
			d.log.Info("deliver: subscribed to the bus again")
			d.sweepNow.Store(true)
			d.poke()
		}
	}
}

// consume records each kick from the bus and acks it. The outbox row is the
// durable state, so once the kick is recorded in memory the bus message has
// done its job; if the process dies now, the sweep at start finds the entry.
func (d *Deliverer) consume(ctx context.Context, kicks <-chan *message.Message) {
	for {
		var msg *message.Message
		var ok bool
		select {
		case <-ctx.Done():
			return
		case msg, ok = <-kicks:
		}
		if !ok {
			if ctx.Err() == nil {
				d.log.Error("deliver: bus subscription ended; delivering from sweeps only until it is made again")
			}
			return
		}
		env, err := Decode(msg)
		switch {
		case err != nil:
		case env.Kind != KindDeliver:
			err = fmt.Errorf("envelope of kind %q on a deliver topic", env.Kind)
		case env.Outbox.Channel != d.cfg.Channel:
			err = fmt.Errorf("kick for channel %q on the topic of %q", env.Outbox.Channel, d.cfg.Channel)
		}
		if err != nil {
			d.poison(msg, err)
		} else {
			d.kick(env.Outbox.Key)
		}
		msg.Ack()
	}
}

// poison publishes an unreadable kick to PoisonTopic.
func (d *Deliverer) poison(msg *message.Message, err error) {
	handler := "deliver." + d.cfg.Channel
	d.metrics.poison(handler)
	d.log.Error("deliver: unreadable kick moved to the poison topic", "message_uuid", msg.UUID, "err", err)
	p := msg.Copy()
	p.Metadata.Set(middleware.ReasonForPoisonedKey, err.Error())
	p.Metadata.Set(middleware.PoisonedTopicKey, DeliverTopic(d.cfg.Channel))
	p.Metadata.Set(middleware.PoisonedHandlerKey, handler)
	if perr := d.cfg.Bus.Publisher().Publish(PoisonTopic, p); perr != nil {
		d.metrics.publishError()
		d.log.Warn("deliver: publish to poison topic failed", "err", perr)
	}
}

// kick asks for key's due entries to be sent. It never blocks on a send.
func (d *Deliverer) kick(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return
	}
	if st, ok := d.keys[key]; ok {
		if st.running {
			st.dirty = true
		}
		return // running, or already waiting for a worker
	}
	st := &keyState{}
	d.keys[key] = st
	if d.active < d.cfg.Workers {
		d.active++
		st.running = true
		d.lanes.Add(1)
		go d.lane(key)
		return
	}
	d.ready = append(d.ready, key)
}

// lane sends entries, one at a time, for one key after another. It holds
// a worker slot; after each entry it yields the slot to a waiting key, so a
// key with a long backlog does not starve the others.
func (d *Deliverer) lane(key string) {
	defer d.lanes.Done()
	for {
		more := d.step(key)

		d.mu.Lock()
		st := d.keys[key]
		if st.dirty && !d.stopping {
			st.dirty = false
			more = true
		}
		switch {
		case d.stopping:
			delete(d.keys, key)
			d.active--
			d.mu.Unlock()
			return
		case more && len(d.ready) == 0:
			d.mu.Unlock()
			continue
		case more:
			st.running = false
			d.ready = append(d.ready, key)
		default:
			delete(d.keys, key)
		}
		if len(d.ready) == 0 {
			d.active--
			d.mu.Unlock()
			return
		}
		key = d.ready[0]
		d.ready = d.ready[1:]
		d.keys[key].running = true
		d.mu.Unlock()
	}
}

// step sends the head of key if it is due. It reports whether the key may
// have more due entries now.
func (d *Deliverer) step(key string) (more bool) {
	ctx, cancel := d.storeCtx()
	defer cancel()
	e, err := d.cfg.Store.OutboxHead(ctx, d.cfg.Channel, key)
	switch {
	case errors.Is(err, core.ErrNotFound):
		return false
	case err != nil:
		d.log.Warn("deliver: reading outbox head failed", "key", key, "err", err)
		d.setTimer(key, d.clock.Now().Add(storeRetryDelay))
		return false
	}
	// A first attempt is due at once: its time is its writer's clock,
	// which may be ahead of this node's (a reply written on another node).
	if at := e.NextAttemptAt; e.Attempts > 0 && at.After(d.clock.Now()) {
		d.setTimer(key, at)
		return false
	}
	return d.attempt(e)
}

// attempt makes one delivery attempt of e and records its result. It
// reports whether e is finished (so the key's next entry may go).
func (d *Deliverer) attempt(e core.OutboxEntry) (finished bool) {
	log := d.log.With("entry", e.ID, "key", e.Key)
	out := Outgoing{Entry: e}
	if e.MessageID != 0 {
		ctx, cancel := d.storeCtx()
		m, err := d.cfg.Store.Message(ctx, e.MessageID)
		var c core.Conversation
		if err == nil {
			c, err = d.cfg.Store.Conversation(ctx, m.ConversationID)
		}
		cancel()
		switch {
		case errors.Is(err, core.ErrNotFound):
			log.Error("deliver: outbox entry refers to a missing message or conversation; dropped",
				"message", e.MessageID, "err", err)
			d.finish(log, e, nil)
			d.metrics.messageOut(d.cfg.Channel, ResultFailed)
			return true
		case err != nil:
			log.Warn("deliver: reading the message failed", "err", err)
			d.setTimer(e.Key, d.clock.Now().Add(storeRetryDelay))
			return false
		}
		out.Message, out.Conversation = &m, &c
	}

	budget := d.cfg.SendTimeout
	if d.hasMedia(out) {
		if !d.takeMedia(e.Key) {
			return false // kicked when an attachment's send ends
		}
		defer d.releaseMedia()
		budget = max(budget, d.cfg.MediaSendTimeout)
	}
	ctx, cancel := context.WithTimeout(d.sendCtx, budget)
	res, err := d.send(ctx, out)
	cancel()
	now := d.clock.Now()
	attempts := e.Attempts + 1

	var perm *PermanentError
	var wait *RetryAfterError
	if err != nil && !errors.As(err, &perm) && now.Sub(e.CreatedAt) >= d.cfg.GiveUpAfter {
		err = Permanent(fmt.Sprintf("not delivered within %s (last error: %s)", d.cfg.GiveUpAfter, clip(err.Error(), 200)), err)
	}
	switch {
	case err == nil:
		if ext := res.ExternalID; ext != "" && (core.StorableText(ext) != ext || len(ext) > maxExternalID) {
			// No store would keep it (PostgreSQL refuses NUL and invalid
			// UTF-8): the message is sent, its later statuses cannot be
			// matched to it.
			log.Warn("deliver: the provider's id for the message cannot be stored; its statuses will not be shown", "external_id", clip(ext, 64))
			res.ExternalID = ""
		}
		var u *core.StatusUpdate
		if out.Message != nil {
			u = &core.StatusUpdate{MessageID: e.MessageID, Status: core.MsgSent, ExternalID: res.ExternalID}
		}
		d.finish(log, e, u)
		d.metrics.messageOut(d.cfg.Channel, ResultSent)
		d.metrics.delivered(d.cfg.Channel, now.Sub(e.CreatedAt), attempts, true)
		d.publishStatus(out.Message, u)
		log.Debug("deliver: sent", "attempts", attempts, "external_id", res.ExternalID)
		return true

	case errors.As(err, &perm) || errors.Is(err, core.ErrWindowClosed):
		reason := err.Error()
		if perm != nil {
			reason = perm.reason()
		}
		reason = core.StorableText(reason)
		var u *core.StatusUpdate
		if out.Message != nil {
			u = &core.StatusUpdate{MessageID: e.MessageID, Status: core.MsgFailed, Reason: reason}
		}
		d.finish(log, e, u)
		d.metrics.messageOut(d.cfg.Channel, ResultFailed)
		d.metrics.delivered(d.cfg.Channel, 0, attempts, false)
		d.publishStatus(out.Message, u)
		log.Warn("deliver: failed permanently", "attempts", attempts, "reason", reason, "err", err)
		return true

	case errors.As(err, &wait) && wait.After > 0:
		d.metrics.messageOut(d.cfg.Channel, ResultRateLimited)
		d.retry(log, e, now.Add(wait.After), err)
		return false

	default:
		d.metrics.messageOut(d.cfg.Channel, ResultRetry)
		d.retry(log, e, now.Add(d.cfg.Backoff(attempts)), err)
		return false
	}
}

// takeMedia claims one of the attachment sends, or reports false and
// puts key among those waiting for one.
func (d *Deliverer) takeMedia(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mediaActive < d.mediaMax {
		d.mediaActive++
		return true
	}
	if !slices.Contains(d.mediaWaiting, key) {
		d.mediaWaiting = append(d.mediaWaiting, key)
	}
	return false
}

// releaseMedia ends an attachment's send and kicks the keys waiting for
// one, oldest first: the first to come takes the free send, the others
// wait again (a single kick would be lost on a key whose head has changed).
func (d *Deliverer) releaseMedia() {
	d.mu.Lock()
	d.mediaActive--
	waiting := d.mediaWaiting
	d.mediaWaiting = nil
	d.mu.Unlock()
	for _, key := range waiting {
		d.kick(key)
	}
}

// hasMedia reports whether out carries an attachment: a message's, or a
// payload entry's that its MediaSender says has one.
func (d *Deliverer) hasMedia(out Outgoing) bool {
	if out.Message != nil {
		return out.Message.Media != nil
	}
	ms, ok := d.cfg.Sender.(MediaSender)
	return ok && ms.HasMedia(out.Entry)
}

// send calls the Sender, turning a panic into a transient error.
func (d *Deliverer) send(ctx context.Context, out Outgoing) (res SendResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("deliver: sender panicked", "entry", out.Entry.ID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("sender panicked: %v", r)
		}
	}()
	return d.cfg.Sender.Send(ctx, out)
}

// retry records a failed attempt and sets the key's timer for next.
func (d *Deliverer) retry(log *slog.Logger, e core.OutboxEntry, next time.Time, sendErr error) {
	// No wait outlasts the entry's time to give up: a provider's
	// Retry-After of a year would hold the key's later entries behind it
	// for that long. The attempt at the give-up time fails it for good
	// unless it goes through.
	if giveUp := e.CreatedAt.Add(d.cfg.GiveUpAfter); next.After(giveUp) {
		next = giveUp
	}
	ctx, cancel := d.storeCtx()
	defer cancel()
	if err := d.cfg.Store.RetryOutbox(ctx, e.ID, next, clip(sendErr.Error(), maxLastError)); err != nil &&
		!errors.Is(err, core.ErrNotFound) {
		log.Error("deliver: recording a failed attempt failed", "err", err)
	}
	log.Info("deliver: attempt failed; will retry", "attempts", e.Attempts+1, "next", next, "err", sendErr)
	d.setTimer(e.Key, next)
}

// finish removes a sent or permanently failed entry and applies u to its
// message. The send already happened, so a store failure here is retried
// (with the key held) rather than left for a sweep that would send again.
func (d *Deliverer) finish(log *slog.Logger, e core.OutboxEntry, u *core.StatusUpdate) {
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := d.storeCtx()
		err := d.cfg.Store.FinishOutbox(ctx, e.ID, u)
		cancel()
		if err == nil || errors.Is(err, core.ErrNotFound) {
			return
		}
		if errors.Is(err, core.ErrClosed) || d.sendCtx.Err() != nil {
			log.Error("deliver: outbox entry done but not recorded; it may be sent again", "err", err)
			return
		}
		log.Error("deliver: recording a finished entry failed; retrying", "err", err)
		select {
		case <-time.After(wait):
		case <-d.sendCtx.Done():
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// publishStatus tells the Notifier of the message's new status, as stored,
// and puts a failure in the conversation's log (core.ReportDeliveryFailure).
func (d *Deliverer) publishStatus(m *core.Message, u *core.StatusUpdate) {
	if m == nil || u == nil || (d.cfg.Notify == nil && u.Status != core.MsgFailed) {
		return
	}
	ctx, cancel := d.storeCtx()
	defer cancel()
	stored, err := d.cfg.Store.Message(ctx, m.ID)
	if err != nil {
		stored = *m
		stored.Status, stored.FailReason = u.Status, u.Reason
		if u.ExternalID != "" {
			stored.ExternalID = u.ExternalID
		}
	}
	if d.cfg.Notify != nil {
		d.cfg.Notify.Publish(ctx, core.Update{Type: core.UpdateStatus, Message: &stored})
	}
	if stored.Status == core.MsgFailed {
		if err := core.ReportDeliveryFailure(ctx, d.cfg.Store, d.cfg.Notify, stored, d.clock.Now()); err != nil {
			d.log.Warn("deliver: recording the failure in the conversation failed", "message", m.ID, "err", err)
		}
	}
}

func (d *Deliverer) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.baseCtx, storeTimeout)
}

// schedule runs the sweeps and backoff timers until ctx ends.
func (d *Deliverer) schedule(ctx context.Context) {
	nextSweep := d.clock.Now() // sweep at once
	for {
		now := d.clock.Now()
		if !now.Before(nextSweep) || d.sweepNow.Swap(false) {
			interval := d.cfg.SweepInterval
			if d.sweep(ctx, now) {
				interval /= 5 // a full page: more may be due
			}
			nextSweep = now.Add(interval)
		}
		for _, key := range d.popDue(now) {
			d.kick(key)
		}
		next := nextSweep
		if at, ok := d.earliest(); ok && at.Before(next) {
			next = at
		}
		if !next.After(now) {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-d.clock.At(next):
		}
	}
}

// sweep kicks the key of every due entry. It reports whether it read a full
// page.
func (d *Deliverer) sweep(ctx context.Context, now time.Time) (full bool) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	entries, err := d.cfg.Store.Outbox(ctx, d.cfg.Channel, now, d.cfg.SweepLimit)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("deliver: outbox sweep failed", "err", err)
		}
		return false
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if !seen[e.Key] {
			seen[e.Key] = true
			d.kick(e.Key)
		}
	}
	return len(entries) >= d.cfg.SweepLimit
}

// setTimer kicks key at at (or earlier, if it already has an earlier timer;
// the lane then sets the timer it needs).
func (d *Deliverer) setTimer(key string, at time.Time) {
	d.tmu.Lock()
	if cur, ok := d.due[key]; ok && !at.Before(cur) {
		d.tmu.Unlock()
		return
	}
	d.due[key] = at
	heap.Push(&d.timers, timer{at: at, key: key})
	first := d.timers[0].key == key && d.timers[0].at.Equal(at)
	d.tmu.Unlock()
	if first {
		d.poke()
	}
}

// poke wakes the scheduler.
func (d *Deliverer) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// popDue removes and returns the keys whose timers are due at now.
func (d *Deliverer) popDue(now time.Time) []string {
	d.tmu.Lock()
	defer d.tmu.Unlock()
	var keys []string
	for len(d.timers) > 0 && !d.timers[0].at.After(now) {
		t := heap.Pop(&d.timers).(timer)
		if cur, ok := d.due[t.key]; ok && cur.Equal(t.at) {
			delete(d.due, t.key)
			keys = append(keys, t.key)
		}
	}
	return keys
}

// earliest returns the time of the next timer.
func (d *Deliverer) earliest() (time.Time, bool) {
	d.tmu.Lock()
	defer d.tmu.Unlock()
	for len(d.timers) > 0 {
		t := d.timers[0]
		if cur, ok := d.due[t.key]; ok && cur.Equal(t.at) {
			return t.at, true
		}
		heap.Pop(&d.timers) // superseded by an earlier timer for its key
	}
	return time.Time{}, false
}

type timer struct {
	at  time.Time
	key string
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// maxExternalID is the longest provider message id kept (the stores index
// them; providers' own are far shorter).
const maxExternalID = 256

// clip shortens s to at most n bytes without splitting a UTF-8 sequence,
// as every store keeps it (core.StorableText).
func clip(s string, n int) string {
	s = core.StorableText(s)
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
