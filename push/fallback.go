package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// Defaults of Config.
const (
	DefaultFallbackAfter = 5 * time.Second
	// DefaultCollapse is the default Config.Collapse.
	DefaultCollapse = 2 * time.Second
	DefaultRetries  = 5
	DefaultBackoff  = time.Second
	// MaxBackoff caps the wait between retries of one push.
	MaxBackoff     = time.Minute
	DefaultWorkers = 4
	// PushTimeout is the default Config.AttemptTimeout.
	PushTimeout = 30 * time.Second
	// DefaultStopGrace is the default Config.StopGrace.
	DefaultStopGrace = 2 * time.Second
	// DefaultCatchUp is the default Config.CatchUp.
	DefaultCatchUp = 5 * time.Minute
	// saveEvery is how often a run saves its cursor when it has moved (in
	// real time, whatever Config.Clock).
	saveEvery = time.Second
	// catchUpPage is how many messages a catch-up reads at a time.
	catchUpPage = 500
	// maxPushedKept bounds the pushes a saved cursor remembers above it
	// (Config.Cursor): past it, the oldest are forgotten, and the next run
	// may push them again.
	maxPushedKept = 2000
)

// Config configures a Fallback.
type Config struct {
	Pusher   Pusher        // required
	Store    core.Store    // required: devices, messages, names, unread counts
	Presence core.Presence // required: who has a live socket (on any node)
	// Topics are the apps whose devices this Fallback pushes, by the
	// topic they registered with; "" stands for devices registered
	// without one. Empty: every device. A deployment with several pushers
	// (a customers' app and an agents' app) gives each its own, so that no
	// device is pushed twice or through another app's pusher (which APNs
	// refuses as DeviceTokenNotForTopic, and the device would be removed).
	Topics []string
	// Bus carries the updates Run consumes (bridge.UpdatesTopic, a fan-out
	// topic). Required by Run.
	Bus bridge.Bus
	// FallbackAfter is how long a message sent over a live socket may stay
	// unacknowledged before it goes out as a push too (push.apns.fallback_after).
	// Default DefaultFallbackAfter.
	FallbackAfter time.Duration
	// Collapse is the burst window: a message for a recipient without a
	// socket waits this long (at most FallbackAfter) so that the messages
	// that follow it go out as one notification carrying the newest, and a
	// conversation gets at most one notification per Collapse. Default
	// DefaultCollapse.
	Collapse time.Duration
	// Retries is how many times a push refused for a temporary reason
	// (*RetryError) is tried again; default DefaultRetries. Negative: never.
	Retries int
	// Backoff is the first wait before a retry, doubling up to MaxBackoff,
	// unless the provider says how long to wait. Default DefaultBackoff.
	Backoff time.Duration
	// Workers is how many pushes run at once (a retry's backoff waits off
	// its worker). Default DefaultWorkers.
	Workers int
	// AttemptTimeout bounds one call to the Pusher; one that runs out is
	// retried as a network failure. Default PushTimeout.
	AttemptTimeout time.Duration
	// StopGrace bounds how long Run takes to return once its ctx has
	// ended: the pushes in flight and those still pending (see Run) get
	// this long, then their ctx is cancelled. Under a cluster lease it must
	// stay well inside the lease's TTL/3 (the node passes TTL/6). Default
	// DefaultStopGrace.
	StopGrace time.Duration
	// Cursor is the store setting under which Run keeps the ID of the last
	// message it has dealt with, so that the next run (after a restart, or
	// on the node that takes the lease over) catches up on the messages
	// committed in between, which no run saw on the bus. Beside it, under
	// Cursor+".pushed", it keeps the messages above it whose push has
	// ended, which the next run does not push again. Empty: every run
	// starts from what it observes.
	Cursor string
	// CatchUp is how old a message may be and still be pushed by a run's
	// catch-up. Default DefaultCatchUp.
	CatchUp time.Duration
	// Clock is the time source for every wait. Default bridge.RealClock.
	Clock   bridge.Clock
	Logger  *slog.Logger
	Metrics *Metrics // nil: not counted
}

// side says who a pending notification is for.
type side uint8

const (
	toAgent   side = iota // the conversation's assignee: a customer wrote
	toContact             // the customer: an agent or a bot wrote
)

func (s side) String() string {
	if s == toAgent {
		return "agent"
	}
	return "contact"
}

type key struct {
	conv int64
	to   side
}

// entry is a notification waiting for its time: the newest message the
// recipient has not acknowledged in one conversation.
type entry struct {
	key
	conv  core.Conversation
	msg   core.Message
	since time.Time // when the oldest unacknowledged message of the entry arrived
	due   time.Time
}

// job is a push that fell due and waits for a worker. Another push for the
// same conversation side that falls due meanwhile takes its place with the
// newer message rather than waiting beside it: a provider that stops
// answering leaves one waiting push per conversation side, not one per
// collapse window, and the device gets the newest message, which would
// replace the older alert anyway (they share a collapse id).
type job struct{ e *entry } // e: guarded by Fallback.mu

// started is, for a conversation side, the newest message a push has been
// started for (queued, sending or backing off) while any of its pushes is
// alive: an older push still alive is overtaken and must not go out after
// it.
type started struct {
	seq  int64
	live int // pushes alive
}

// Fallback decides, for every new message, whether its recipient needs a
// push, and sends it through the Pusher to the recipient's devices:
//
//   - a customer's message is for the conversation's assignee (an agent's
//     devices); an agent's or a bot's public message is for the customer
//     (the devices of the conversation's identity);
//   - a recipient with no live socket (on any node) is pushed to once the
//     Collapse window has passed, carrying the newest message;
//   - a recipient with a live socket is pushed to when the message is still
//     unacknowledged FallbackAfter after it arrived (a half-open socket
//     looks alive);
//   - an acknowledgement (a delivered or read receipt for the message or a
//     later one, the message's status moving to delivered or read, or the
//     recipient writing in the conversation) cancels the pending push, and
//     a message whose stored status says the recipient has it is never
//     pushed.
//
// Tokens the provider reports gone are removed from the store. A provider
// refusing kefu's credentials makes Check fail (for /readyz) until a push
// succeeds; the reason is logged once.
//
// Run consumes the fan-out updates topic, so every node would push: in a
// cluster exactly one node may run it (under a lease).
type Fallback struct {
	cfg Config
	log *slog.Logger

	running atomic.Bool // a Run is under way

	mu        sync.Mutex
	pending   map[key]*entry
	sent      map[key]time.Time  // when each conversation side was last pushed to
	kick      chan struct{}      // the schedule changed
	observed  int64              // every message up to it has been observed (or was too old)
	saved     int64              // the cursor last saved (Config.Cursor)
	pushed    map[int64]struct{} // with a Cursor: messages above it whose push has ended (sent, refused, or found needless)
	savedList string             // the pushed list last saved
	inflight  map[int64]int      // messages whose push is under way, by ID
	queued    map[key]*job       // the pushes waiting for a worker, by conversation side
	started   map[key]started    // per conversation side with pushes alive: the newest message handed to one
	// waiting holds the newest customer message of each conversation that
	// had no assignee when it came (its text cut to MaxBody): the agent
	// routing gives it to next is pushed for it (see assigned).
	waiting map[int64]core.Message

	healthMu sync.Mutex
	authErr  error // the provider refused kefu's credentials, until a push succeeds
}

// New checks cfg, applies its defaults and returns a Fallback.
func New(cfg Config) (*Fallback, error) {
	var errs []error
	if cfg.Pusher == nil {
		errs = append(errs, errors.New("Pusher is nil"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("Store is nil"))
	}
	if cfg.Presence == nil {
		errs = append(errs, errors.New("Presence is nil"))
	}
	if cfg.FallbackAfter < 0 || cfg.Collapse < 0 || cfg.Backoff < 0 || cfg.Workers < 0 || cfg.StopGrace < 0 || cfg.CatchUp < 0 {
		errs = append(errs, errors.New("negative duration or worker count"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("push.New: %w", err)
	}
	if cfg.FallbackAfter == 0 {
		cfg.FallbackAfter = DefaultFallbackAfter
	}
	if cfg.Collapse == 0 {
		cfg.Collapse = DefaultCollapse
	}
	cfg.Collapse = min(cfg.Collapse, cfg.FallbackAfter)
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = PushTimeout
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.CatchUp == 0 {
		cfg.CatchUp = DefaultCatchUp
	}
	if cfg.Clock == nil {
		cfg.Clock = bridge.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Fallback{
		cfg: cfg, log: cfg.Logger.With("component", "push"),
		pending: map[key]*entry{}, sent: map[key]time.Time{}, kick: make(chan struct{}, 1), inflight: map[int64]int{},
		queued: map[key]*job{}, started: map[key]started{}, pushed: map[int64]struct{}{},
		waiting: map[int64]core.Message{},
	}, nil
}

// Run consumes bridge.UpdatesTopic and pushes what needs pushing until ctx
// is done. Under a cluster lease it runs once per tenure, and each run
// starts afresh: what an earlier run had pending, or had pushed, is
// forgotten (another node may have held the lease meanwhile, and the
// messages it waited for may have been answered since).
//
// With a Config.Cursor, a run first catches up on the messages committed
// after the cursor (at most Config.CatchUp old), which no run saw on the
// bus: those an earlier run left waiting or cut off, and those committed
// while no node held the lease. It decides on them as on live ones; a
// message the store shows delivered or read is not pushed, nor one the
// list beside the cursor says an earlier run pushed. Then it follows the
// bus, through a sequencer that also reads from the store the messages
// whose update did not come (a lost publish). While it runs it saves, once
// a second when it has moved, the ID at or below which it has dealt with
// everything (below the oldest message it still has waiting, under way or
// cut off), with the list of the messages above it whose push has ended. A
// crash can therefore push again, at most once per conversation, a message
// pushed in the second before it. When ctx ends, a clean stop gives the
// pushes under way StopGrace, leaves those waiting to the next run and
// saves the cursor; a run that lost the lease (cause bridge.ErrLeaseLost)
// cuts its pushes off at once and saves nothing. The very first run saves
// the log's end as its cursor.
//
// Without a cursor, when ctx ends (a clean stop, or the lease lost), the
// pushes still pending are not dropped, since the next holder of the lease
// never saw the updates they came from: each goes out at its due time, or
// StopGrace/2 after the stop if that is sooner, unless the store shows its
// message delivered or read by then. Run returns nil once those and the
// pushes in flight have ended, within StopGrace (then their ctx is
// cancelled).
//
// Run must not be called again before it has returned; a concurrent call
// fails.
func (f *Fallback) Run(ctx context.Context) error {
	if f.cfg.Bus == nil {
		return errors.New("push: Run needs a Bus")
	}
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("push: Run is already running")
	}
	defer f.running.Store(false)
	return f.run(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
		return f.cfg.Bus.FanoutSubscriber().Subscribe(ctx, bridge.UpdatesTopic)
	})
}

// reset forgets every pending and recent push: a new tenure starts from
// what it observes.
func (f *Fallback) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.pending)
	clear(f.sent)
	f.observed, f.saved, f.savedList = 0, 0, ""
	clear(f.pushed)
	clear(f.inflight)
	clear(f.queued)
	clear(f.started)
	clear(f.waiting)
	select {
	case <-f.kick:
	default:
	}
}

// run is Run's tenure over the updates subscribe returns: it starts afresh,
// catches up, subscribes, loops, and hands over. Pushes run on their own
// ctx, which outlives ctx by at most StopGrace (see stop).
//
// The updates pass through a bridge.Sequencer, which releases messages in
// ID order and reads from the store those whose update did not come (their
// publish was lost, or they were committed between the catch-up and the
// subscription), so that the run observes every message after its start,
// once.
func (f *Fallback) run(ctx context.Context, subscribe func(context.Context) (<-chan *message.Message, error)) error {
	f.reset()
	start, err := f.catchUp(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		// Going on live would move the cursor past what the catch-up did
		// not read, for good: the run fails instead, and the next one
		// (here after a backoff, or on the node that takes the lease)
		// catches up from the same cursor.
		return fmt.Errorf("push: catch up on the messages committed while no node pushed: %w", err)
	}
	msgs, err := subscribe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("push: subscribe to updates: %w", err)
	}
	seq := bridge.NewSequencer(start, bridge.ResequenceWait, f.cfg.Store.Feed, f.cfg.Store.Conversation)
	f.mu.Lock()
	f.observed = start
	f.mu.Unlock()
	wctx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	slots := make(chan struct{}, f.cfg.Workers)
	// push delivers es in the background, each not before notBefore
	// (zero: at once).
	push := func(es []*entry, notBefore func(*entry) time.Time) {
		for _, e := range es {
			f.mu.Lock()
			st := f.started[e.key]
			st.seq = max(st.seq, e.msg.Seq)
			if j := f.queued[e.key]; j != nil && notBefore == nil {
				// The push before it still waits for a worker: the newer
				// of the two messages goes out, once (see job).
				if e.msg.Seq > j.e.msg.Seq {
					f.done(j.e.msg.ID)
					f.inflight[e.msg.ID]++
					j.e = e
				}
				f.started[e.key] = st
				f.mu.Unlock()
				f.cfg.Metrics.skipped("superseded")
				continue
			}
			st.live++
			f.started[e.key] = st
			j := &job{e: e}
			if notBefore == nil {
				f.queued[e.key] = j
			}
			f.inflight[e.msg.ID]++
			f.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					f.mu.Lock()
					defer f.mu.Unlock()
					if st := f.started[e.key]; st.live > 1 {
						st.live--
						f.started[e.key] = st
					} else {
						delete(f.started, e.key)
					}
					if wctx.Err() != nil {
						return // cut off: it stays below the cursor, for the next run
					}
					f.done(j.e.msg.ID)
					if f.cfg.Cursor != "" {
						f.pushed[j.e.msg.ID] = struct{}{}
					}
				}()
				if notBefore != nil {
					select {
					case <-f.cfg.Clock.At(notBefore(e)):
					case <-wctx.Done():
						return
					}
				}
				held := false
				take := func() bool {
					select {
					case slots <- struct{}{}:
						held = true
						return true
					case <-wctx.Done():
						return false
					}
				}
				defer func() {
					if held {
						<-slots
					}
				}()
				ok := take()
				f.mu.Lock()
				if f.queued[e.key] == j {
					delete(f.queued, e.key)
				}
				e := j.e
				f.mu.Unlock()
				if !ok {
					return
				}
				f.deliver(wctx, e, func(at <-chan time.Time) bool {
					<-slots // a retry's backoff waits off the slot
					held = false
					select {
					case <-at:
					case <-wctx.Done():
						return false
					}
					if f.superseded(e) || !take() || f.superseded(e) {
						return false
					}
					return true
				})
			}()
		}
	}
	err = f.loop(ctx, msgs, seq, push)
	switch {
	case f.cfg.Cursor == "":
		// No next run will read what the sequencer still holds: it is
		// read now, and handed over with the rest.
		if _, held := seq.Deadline(); held {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.StopGrace/2)
			if ferr := seq.Fill(fctx, time.Now(), f.observeRead); ferr != nil {
				f.log.Warn("push: reading the messages whose update did not come failed at the stop; they go without notification", "err", ferr)
			}
			cancel()
		}
		f.stop(&wg, cancelWork, push)
	case errors.Is(context.Cause(ctx), bridge.ErrLeaseLost):
		// Another node may hold the lease already: what this run has
		// waiting or under way is left to it, since the cursor saved last
		// is below all of it.
		cancelWork()
		wg.Wait()
	default:
		// A clean stop: the pushes under way get the grace, those waiting
		// are left to the next run, and the cursor is saved below them.
		f.finish(&wg, cancelWork)
		f.saveCursor(context.Background(), f.cursorAt())
	}
	f.clearHealth()
	return err
}

// finish waits for the pushes under way, cancelling them after StopGrace.
func (f *Fallback) finish(wg *sync.WaitGroup, cancelWork context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-f.cfg.Clock.At(f.cfg.Clock.Now().Add(f.cfg.StopGrace)):
		cancelWork()
		<-done
	}
}

// catchUp observes the messages committed after the saved cursor and at
// most CatchUp old, as if they had come on the bus, and returns the ID up
// to which it has: where the run's sequencer starts. Without a cursor, or
// the first time, that is the log's end.
func (f *Fallback) catchUp(ctx context.Context) (int64, error) {
	if f.cfg.Cursor == "" {
		return bridge.LastMessageID(ctx, f.cfg.Store.Feed)
	}
	v, err := f.cfg.Store.Setting(ctx, f.cfg.Cursor)
	after, perr := strconv.ParseInt(v, 10, 64)
	if err == nil && perr != nil {
		// Not written by kefu: failing every run would stop pushes for
		// good; starting afresh loses only what no run saw.
		f.log.Error("push: the saved cursor is not a message id; starting from the log's end", "setting", f.cfg.Cursor, "value", v)
		err = core.ErrNotFound
	}
	if errors.Is(err, core.ErrNotFound) {
		// The very first run starts from what it observes, and saves
		// the log's end as the cursor the next run catches up from.
		end, err := bridge.LastMessageID(ctx, f.cfg.Store.Feed)
		if err != nil {
			return 0, err
		}
		f.saveCursor(ctx, end)
		return end, nil
	}
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.saved = after
	f.mu.Unlock()
	if err := f.loadPushed(ctx, after); err != nil {
		return 0, err
	}
	oldest := f.cfg.Clock.Now().Add(-f.cfg.CatchUp)
	if after, err = f.firstRecent(ctx, after, oldest); err != nil {
		return 0, err
	}
	// Bounded by age, not by count: what a catch-up leaves unread, no
	// run would ever push.
	convs := map[int64]*core.Conversation{}
	n := 0
	for {
		ms, err := f.cfg.Store.Feed(ctx, after, catchUpPage)
		if err != nil {
			return 0, err
		}
		for i := range ms {
			m := &ms[i]
			after = m.ID
			if m.CreatedAt.Before(oldest) {
				continue
			}
			c, ok := convs[m.ConversationID]
			if !ok {
				cv, err := f.cfg.Store.Conversation(ctx, m.ConversationID)
				if errors.Is(err, core.ErrNotFound) {
					continue
				}
				if err != nil {
					return 0, err
				}
				c, convs[m.ConversationID] = &cv, &cv
			}
			f.Observe(core.Update{Type: core.UpdateMessage, Message: m, Conversation: c})
			n++
		}
		if len(ms) < catchUpPage {
			break
		}
	}
	if n > 0 {
		f.log.Info("push: caught up on messages committed while no node pushed", "messages", n)
	}
	return after, nil
}

// pushedSetting is the setting beside the cursor that lists the messages
// above it whose push has ended.
func (f *Fallback) pushedSetting() string { return f.cfg.Cursor + ".pushed" }

// loadPushed reads the list of messages above the cursor after whose push
// an earlier run ended (see saveCursor).
func (f *Fallback) loadPushed(ctx context.Context, after int64) error {
	v, err := f.cfg.Store.Setting(ctx, f.pushedSetting())
	if errors.Is(err, core.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.savedList = v
	for _, field := range strings.Split(v, ",") {
		id, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			if field != "" {
				f.log.Warn("push: ignoring a malformed entry of the pushed list", "setting", f.pushedSetting(), "entry", field)
			}
			continue
		}
		if id > after {
			f.pushed[id] = struct{}{}
		}
	}
	return nil
}

// firstRecent returns the ID after which the messages following after are
// no older than oldest (IDs follow commit order, so creation times nearly
// do), probing the log (bridge.SearchFeed): a stale cursor does not spend
// the catch-up's time on messages it would skip.
func (f *Fallback) firstRecent(ctx context.Context, after int64, oldest time.Time) (int64, error) {
	// old reports whether the first message after id is older than oldest
	// (false when there is none).
	old := func(id int64) (bool, error) {
		ms, err := f.cfg.Store.Feed(ctx, id, 1)
		return err == nil && len(ms) == 1 && ms[0].CreatedAt.Before(oldest), err
	}
	return bridge.SearchFeed(after, old)
}

// saveCursor stores at as the cursor (Config.Cursor), and beside it the
// messages above it whose push has ended, when they changed, within
// saveEvery. The list is written first, and holds what is above the cursor
// saved before as well as above at, so that a run that stops between the
// two writes leaves a list that covers the cursor it left.
func (f *Fallback) saveCursor(ctx context.Context, at int64) {
	if f.cfg.Cursor == "" || at <= 0 || ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	list := f.pushedAbove(min(f.saved, at))
	moved, listed := at != f.saved, list != f.savedList
	f.mu.Unlock()
	if !moved && !listed {
		return
	}
	put := func(key, value string) error {
		ctx, cancel := context.WithTimeout(ctx, saveEvery)
		defer cancel()
		return f.cfg.Store.PutSetting(ctx, key, value)
	}
	if listed {
		if err := put(f.pushedSetting(), list); err != nil {
			f.log.Warn("push: could not save the pushed list; the next run may push some messages again", "err", err)
			return
		}
		f.mu.Lock()
		f.savedList = list
		f.mu.Unlock()
	}
	if !moved {
		return
	}
	if err := put(f.cfg.Cursor, strconv.FormatInt(at, 10)); err != nil {
		f.log.Warn("push: could not save the cursor; the next run may push some messages again", "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saved = at
	for id := range f.pushed {
		if id <= at {
			delete(f.pushed, id)
		}
	}
}

// pushedAbove returns the pushed messages above floor, the newest
// maxPushedKept of them, as the setting lists them (f.mu held).
func (f *Fallback) pushedAbove(floor int64) string {
	ids := make([]int64, 0, len(f.pushed))
	for id := range f.pushed {
		if id > floor {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > maxPushedKept {
		ids = ids[len(ids)-maxPushedKept:]
	}
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// done forgets one push of message id as under way (f.mu held).
func (f *Fallback) done(id int64) {
	if f.inflight[id]--; f.inflight[id] <= 0 {
		delete(f.inflight, id)
	}
}

// superseded reports whether a push for a newer message of e's
// conversation side has been started (see started): e going out after it
// would bring the older message back on the device. It counts the skip.
func (f *Fallback) superseded(e *entry) bool {
	f.mu.Lock()
	newer := f.started[e.key].seq > e.msg.Seq
	f.mu.Unlock()
	if newer {
		f.cfg.Metrics.skipped("superseded")
	}
	return newer
}

// cursorAt returns the ID at or below which this run has dealt with every
// message: below the oldest push waiting or under way, else the last the
// sequencer released.
func (f *Fallback) cursorAt() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	at := f.observed
	for _, e := range f.pending {
		at = min(at, e.msg.ID-1)
	}
	for id := range f.inflight {
		at = min(at, id-1)
	}
	return at
}

// loop observes msgs, through seq, and starts the pushes that fall due,
// until ctx ends (nil) or msgs ends on its own (an error). The sequencer's
// waits are in real time, as the bus's delays are, whatever Config.Clock.
func (f *Fallback) loop(ctx context.Context, msgs <-chan *message.Message, seq *bridge.Sequencer, push func([]*entry, func(*entry) time.Time)) error {
	var (
		timer   <-chan time.Time
		armedAt time.Time
		save    <-chan time.Time // the cursor's ticker (real time)
		fill    <-chan time.Time // the sequencer's gap is due to be read
		fillAt  time.Time
	)
	if f.cfg.Cursor != "" {
		tick := time.NewTicker(saveEvery)
		defer tick.Stop()
		save = tick.C
	}
	probe := time.NewTicker(bridge.ProbeEvery)
	defer probe.Stop()
	// released follows seq after it has moved.
	released := func() {
		f.mu.Lock()
		f.observed = seq.Last()
		f.mu.Unlock()
		switch d, ok := seq.Deadline(); {
		case !ok:
			fill, fillAt = nil, time.Time{}
		case fill == nil || !d.Equal(fillAt):
			fill, fillAt = time.After(time.Until(d)), d
		}
	}
	// read runs one of seq's store reads.
	read := func(what string, op func(context.Context) error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := op(rctx); err != nil && ctx.Err() == nil {
			f.log.Warn("push: "+what+" failed; retrying", "err", err)
		}
		released()
	}
	for {
		if t, ok := f.next(); !ok {
			timer, armedAt = nil, time.Time{}
		} else if timer == nil || !t.Equal(armedAt) {
			timer, armedAt = f.cfg.Clock.At(t), t
		}
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("push: the updates subscription ended")
			}
			env, err := bridge.Decode(msg)
			if err != nil || env.Kind != bridge.KindUpdates {
				f.log.Warn("push: dropped a malformed updates envelope", "uuid", msg.UUID, "err", err)
				msg.Ack()
				continue
			}
			now := time.Now()
			for _, u := range env.Updates {
				seq.Add(u, now, f.Observe)
			}
			msg.Ack()
			released()
		case <-probe.C:
			// A message whose publish was lost, with nothing after it.
			read("reading the store for messages whose update never came", func(ctx context.Context) error {
				_, err := seq.Probe(ctx, time.Now())
				return err
			})
		case <-fill:
			fill = nil
			read("reading the messages whose update did not come", func(ctx context.Context) error {
				if err := seq.Fill(ctx, time.Now(), f.observeRead); err != nil {
					return err
				}
				_, err := seq.Probe(ctx, time.Now()) // more may follow (a backlog)
				return err
			})
		case <-f.kick:
		case <-save:
			f.saveCursor(ctx, f.cursorAt())
		case <-timer:
			timer = nil
			push(f.takeDue(f.cfg.Clock.Now()), nil)
		}
	}
}

// stop hands over at the end of a run: it starts the pushes still pending
// (each at its due time or half the grace from now, whichever is sooner) and
// waits for them and those in flight, cancelling them after StopGrace.
func (f *Fallback) stop(wg *sync.WaitGroup, cancelWork context.CancelFunc, push func([]*entry, func(*entry) time.Time)) {
	now := f.cfg.Clock.Now()
	latest := now.Add(f.cfg.StopGrace / 2)
	f.mu.Lock()
	pending := make([]*entry, 0, len(f.pending))
	for k, e := range f.pending {
		pending = append(pending, e)
		delete(f.pending, k)
	}
	f.mu.Unlock()
	if len(pending) > 0 {
		f.log.Info("push: stopping; sending the pending notifications within the grace", "pending", len(pending), "grace", f.cfg.StopGrace)
		push(pending, func(e *entry) time.Time {
			if e.due.Before(latest) {
				return e.due
			}
			return latest
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-f.cfg.Clock.At(now.Add(f.cfg.StopGrace)):
		cancelWork()
		<-done
	}
}

// Observe takes one committed update into account: a new message schedules
// a push for its recipient, an acknowledgement cancels one. Run calls it for
// every update on the bus; it does not block.
func (f *Fallback) Observe(u core.Update) {
	now := f.cfg.Clock.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	switch u.Type {
	case core.UpdateMessage:
		if u.Message == nil || u.Conversation == nil {
			return
		}
		f.message(now, *u.Conversation, *u.Message)
	case core.UpdateReceipt:
		if r := u.Receipt; r != nil && (r.Status == core.MsgDelivered || r.Status == core.MsgRead) {
			to := toAgent // an agent's receipt acknowledges the customer's messages
			if r.ByContact {
				to = toContact
			}
			k := key{r.ConversationID, to}
			if e := f.pending[k]; e != nil && to == toAgent && r.Status == core.MsgDelivered && r.AgentID != 0 && r.AgentID != e.conv.AssigneeID {
				return // a colleague's console has it, not the assignee (read is seen, as seen says)
			}
			f.ack(now, k, r.UpToSeq)
		}
	case core.UpdateStatus:
		if m := u.Message; m != nil && (m.Status == core.MsgDelivered || m.Status == core.MsgRead) {
			f.ack(now, key{m.ConversationID, recipientOf(*m)}, m.Seq)
		}
	case core.UpdateConversation:
		if c := u.Conversation; c != nil {
			for _, to := range []side{toAgent, toContact} {
				if e := f.pending[key{c.ID, to}]; e != nil {
					e.conv = *c
				}
			}
			f.assigned(now, *c)
		}
	}
}

// maxWaiting bounds Fallback.waiting: past it the oldest message goes.
const maxWaiting = 10000

// assigned pushes the agent a conversation now has for the customer's
// message that came while it had none: routing assigns a new
// conversation just after its first message is published. An assignee
// with a live socket has it in their console already (f.mu held).
func (f *Fallback) assigned(now time.Time, c core.Conversation) {
	m, ok := f.waiting[c.ID]
	if !ok || (c.AssigneeID == 0 && c.Status != core.StatusResolved) {
		return
	}
	delete(f.waiting, c.ID)
	if c.AssigneeID != 0 && c.Status != core.StatusResolved && !f.connected(toAgent, c) && f.pending[key{c.ID, toAgent}] == nil {
		f.schedule(now, key{c.ID, toAgent}, c, m)
	}
}

// wait records m, a customer's message in c, which has no assignee
// (f.mu held).
func (f *Fallback) wait(c core.Conversation, m core.Message) {
	m.Text = truncate(m.Text, MaxBody) // all Body shows
	f.waiting[c.ID] = m
	if len(f.waiting) > maxWaiting {
		oldest := c.ID
		for id, w := range f.waiting {
			if w.ID < f.waiting[oldest].ID {
				oldest = id
			}
		}
		delete(f.waiting, oldest)
	}
}

// observeRead observes an update the sequencer read from the store (its
// bus update did not come): a message older than CatchUp is not pushed, as
// in a catch-up.
func (f *Fallback) observeRead(u core.Update) {
	if u.Type == core.UpdateMessage && u.Message != nil && u.Message.CreatedAt.Before(f.cfg.Clock.Now().Add(-f.cfg.CatchUp)) {
		return
	}
	f.Observe(u)
}

// recipientOf is the side a message is for.
func recipientOf(m core.Message) side {
	if m.SenderKind == core.SenderContact {
		return toAgent
	}
	return toContact
}

// message handles a new message or event (f.mu held).
func (f *Fallback) message(now time.Time, c core.Conversation, m core.Message) {
	for _, to := range []side{toAgent, toContact} {
		if e := f.pending[key{c.ID, to}]; e != nil {
			e.conv = c
		}
	}
	f.assigned(now, c)
	switch {
	case m.SenderKind == core.SenderContact && m.Visibility == core.Public && m.Kind != core.KindEvent:
		// The customer is writing: they have seen what came before.
		f.ack(now, key{c.ID, toContact}, m.Seq)
		if c.AssigneeID != 0 {
			delete(f.waiting, c.ID)
			f.schedule(now, key{c.ID, toAgent}, c, m)
		} else {
			f.wait(c, m)
		}
	case m.Outgoing():
		if m.SenderKind == core.SenderAgent && m.SenderID == c.AssigneeID {
			f.ack(now, key{c.ID, toAgent}, m.Seq)
		}
		f.schedule(now, key{c.ID, toContact}, c, m)
	case m.SenderKind == core.SenderAgent && m.SenderID == c.AssigneeID && m.SenderID != 0:
		// A note by the assignee: they are looking at the conversation.
		f.ack(now, key{c.ID, toAgent}, m.Seq)
	}
}

// schedule records m as the newest message for k's recipient (f.mu held).
func (f *Fallback) schedule(now time.Time, k key, c core.Conversation, m core.Message) {
	if _, ok := f.pushed[m.ID]; ok {
		// An earlier run pushed it (this run's catch-up reads it again):
		// the recipient has been told of it, and of what came before.
		if e := f.pending[k]; e != nil && e.msg.Seq <= m.Seq {
			delete(f.pending, k)
			f.wake()
		}
		return
	}
	delay := f.cfg.Collapse
	if f.connected(k.to, c) {
		delay = f.cfg.FallbackAfter
	}
	due := now.Add(delay)
	if last, ok := f.sent[k]; ok && due.Before(last.Add(f.cfg.Collapse)) {
		due = last.Add(f.cfg.Collapse)
	}
	e := f.pending[k]
	if e == nil {
		e = &entry{key: k, since: now, due: due}
		f.pending[k] = e
	} else if due.Before(e.due) {
		e.due = due
	}
	e.conv = c
	if m.Seq > e.msg.Seq {
		e.msg = m
	}
	f.wake()
}

// ack cancels k's pending push when its newest message is at or below
// upTo (f.mu held). An acknowledgement of older messages only shows that
// the socket works: the newer ones get FallbackAfter from now.
func (f *Fallback) ack(now time.Time, k key, upTo int64) {
	e := f.pending[k]
	switch {
	case e == nil:
	case e.msg.Seq <= upTo:
		delete(f.pending, k)
		f.cfg.Metrics.skipped("acked")
		f.wake()
	case upTo > 0 && f.connected(k.to, e.conv):
		e.since, e.due = now, now.Add(f.cfg.FallbackAfter)
		f.wake()
	}
}

func (f *Fallback) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// connected reports whether the recipient on side to of c has a live
// socket on any node.
func (f *Fallback) connected(to side, c core.Conversation) bool {
	if to == toAgent {
		return c.AssigneeID != 0 && f.cfg.Presence.Connected(c.AssigneeID)
	}
	return f.cfg.Presence.ContactConnected(c.ContactID)
}

// next returns the earliest due time.
func (f *Fallback) next() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var t time.Time
	for _, e := range f.pending {
		if t.IsZero() || e.due.Before(t) {
			t = e.due
		}
	}
	return t, !t.IsZero()
}

// takeDue removes and returns the entries due at now. One whose recipient
// has (again) a live socket gets until FallbackAfter after its first
// message to acknowledge it.
func (f *Fallback) takeDue(now time.Time) []*entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*entry
	for k, e := range f.pending {
		if e.due.After(now) {
			continue
		}
		if late := e.since.Add(f.cfg.FallbackAfter); now.Before(late) && f.connected(k.to, e.conv) {
			e.due = late
			continue
		}
		delete(f.pending, k)
		f.sent[k] = now
		out = append(out, e)
	}
	for k, t := range f.sent {
		if !now.Before(t.Add(f.cfg.Collapse)) {
			delete(f.sent, k)
		}
	}
	return out
}

// Check reports whether the provider accepts kefu's credentials: it fails
// from a push refused with ErrProviderAuth until a push succeeds. For
// /readyz.
func (f *Fallback) Check(context.Context) error {
	f.healthMu.Lock()
	defer f.healthMu.Unlock()
	if f.authErr != nil {
		return fmt.Errorf("push provider refuses kefu's credentials: %w", f.authErr)
	}
	return nil
}

// clearHealth forgets a refusal of kefu's credentials when a run ends: a
// node that no longer pushes has no say in /readyz or kefu_push_unhealthy,
// and the next holder finds out for itself.
func (f *Fallback) clearHealth() {
	f.healthMu.Lock()
	was := f.authErr
	f.authErr = nil
	f.healthMu.Unlock()
	if was != nil {
		f.cfg.Metrics.setUnhealthy(false)
	}
}

// setHealth records the outcome of a push for Check, logging a change once.
func (f *Fallback) setHealth(authErr error) {
	f.healthMu.Lock()
	was := f.authErr
	f.authErr = authErr
	f.healthMu.Unlock()
	switch {
	case authErr != nil && was == nil:
		f.cfg.Metrics.setUnhealthy(true)
		f.log.Error("push: the provider refuses kefu's credentials; no push will be sent until the key is fixed (see docs/push.md)", "err", authErr)
	case authErr == nil && was != nil:
		f.cfg.Metrics.setUnhealthy(false)
		f.log.Info("push: the provider accepts kefu's credentials again")
	}
}
