package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/kefuhq/kefu/core"
)

// FollowHandler is a channel that follows conversations for agents (Work
// WeChat notifies an agent of their conversations, Slack mirrors every
// conversation into a thread). It sees every message and event of every
// conversation, in ID order.
type FollowHandler interface {
	// Follow handles one message. A nil error moves the follower past it.
	// A Permanent error is logged and the message skipped. Any other error
	// is retried, with backoff, from the same message: the log does not move
	// on until it succeeds, so the handler sees messages in order and at
	// least once (after a crash, the last few may come again).
	Follow(ctx context.Context, m core.Message, c core.Conversation) error
}

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	// Name identifies the follower's cursor in the store ("follow.NAME");
	// normally the channel instance. Required.
	Name    string
	Handler FollowHandler // required
	Store   core.Store    // required
	// Bus wakes the follower when updates are published (any node). nil:
	// it only polls.
	Bus Bus
	// Poll is how often the log is read when nothing wakes the follower.
	// Default 2 s.
	Poll time.Duration
	// Batch is how many messages one read takes. Default 200.
	Batch int
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Follower hands every message of the log (Store.Feed) to its handler in ID
// order, from a cursor kept in the store, so a restart resumes where it
// stopped. On its very first start it begins at that moment: messages
// written before are skipped, so that enabling Slack does not replay years
// of history into a channel.
//
// In a cluster exactly one node runs a given follower: node.Run runs it
// under the cluster lease "follow.NAME" (RunLeased).
type Follower struct {
	cfg  FollowerConfig
	log  *slog.Logger
	key  string
	wake chan struct{}
}

// NewFollower checks cfg and returns a Follower.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, errors.New("Name is empty"))
	}
	if cfg.Handler == nil {
		errs = append(errs, errors.New("Handler is nil"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("Store is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bridge.NewFollower: %w", err)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 200
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Follower{cfg: cfg, log: cfg.Logger.With("follower", cfg.Name), key: "follow." + cfg.Name, wake: make(chan struct{}, 1)}, nil
}

// cursorState is what the follower keeps under its key: the last message
// handled, and the time before which messages are skipped (first start).
func (f *Follower) load(ctx context.Context) (after int64, since time.Time, err error) {
	start := f.cfg.Now().UTC().Format(time.RFC3339Nano)
	v, err := f.cfg.Store.EnsureSetting(ctx, f.key, "0 "+start)
	if err != nil {
		return 0, time.Time{}, err
	}
	var id, ts string
	if _, err := fmt.Sscan(v, &id, &ts); err != nil {
		return 0, time.Time{}, fmt.Errorf("follower %s: malformed cursor %q", f.cfg.Name, v)
	}
	after, err = strconv.ParseInt(id, 10, 64)
	if err == nil {
		since, err = time.Parse(time.RFC3339Nano, ts)
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("follower %s: malformed cursor %q", f.cfg.Name, v)
	}
	return after, since, nil
}

// save stores the cursor. It outlives ctx: on a clean stop the messages
// already handled must not be handled again after the restart.
func (f *Follower) save(ctx context.Context, after int64, since time.Time) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return f.cfg.Store.PutSetting(ctx, f.key, strconv.FormatInt(after, 10)+" "+since.UTC().Format(time.RFC3339Nano))
}

// Run follows the log until ctx is done.
func (f *Follower) Run(ctx context.Context) error {
	if f.cfg.Bus != nil {
		go f.listen(ctx)
	}
	var (
		after   int64
		since   time.Time
		loaded  bool
		backoff time.Duration
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-f.wake:
			if backoff > 0 {
				// Backing off after a failure: a new message does not cut
				// the wait short (every update on the bus wakes the
				// follower, and would retry a failing handler at once).
				continue
			}
		}
		if !loaded {
			var err error
			if after, since, err = f.load(ctx); err != nil {
				f.log.Error("follower: reading the cursor failed", "err", err)
				backoff = nextBackoff(backoff)
				timer.Reset(backoff)
				continue
			}
			loaded = true
		}
		next, err := f.drain(ctx, after, since)
		if next != after {
			if serr := f.save(ctx, next, since); serr != nil {
				f.log.Warn("follower: saving the cursor failed; messages may be handled again", "err", serr)
			}
			after = next
		}
		if err != nil && ctx.Err() == nil {
			backoff = nextBackoff(backoff)
			f.log.Warn("follower: handler failed; retrying", "message", next+1, "in", backoff, "err", err)
			timer.Reset(backoff)
			continue
		}
		backoff = 0
		timer.Reset(f.cfg.Poll)
	}
}

// listen wakes the follower on each update on the bus until ctx ends. The
// updates only hurry it (it reads the log every Poll anyway), so a bus
// that is down, or a subscription that ends, is retried, waiting from 1 s
// up to 30 s between tries.
func (f *Follower) listen(ctx context.Context) {
	wait := time.Second
	for {
		updates, err := f.cfg.Bus.FanoutSubscriber().Subscribe(ctx, UpdatesTopic)
		if err == nil {
			for msg := range updates {
				msg.Ack()
				f.Wake()
			}
			wait = time.Second
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.log.Warn("follower: cannot subscribe to the bus; reading the log every poll until it can", "retry_in", wait, "err", err)
		} else {
			f.log.Warn("follower: bus subscription ended; subscribing again", "in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// drain hands every message after `after` to the handler and returns the
// new cursor, stopping at the first transient failure.
func (f *Follower) drain(ctx context.Context, after int64, since time.Time) (int64, error) {
	convs := map[int64]core.Conversation{}
	for ctx.Err() == nil {
		batch, err := f.cfg.Store.Feed(ctx, after, f.cfg.Batch)
		if err != nil {
			return after, err
		}
		for _, m := range batch {
			if m.CreatedAt.Before(since) {
				after = m.ID
				continue
			}
			c, ok := convs[m.ConversationID]
			if !ok || m.Kind == core.KindEvent {
				// Events change the conversation: read it again.
				if c, err = f.cfg.Store.Conversation(ctx, m.ConversationID); err != nil {
					return after, err
				}
				convs[m.ConversationID] = c
			}
			var perm *PermanentError
			switch err := f.follow(ctx, m, c); {
			case err == nil:
			case errors.As(err, &perm):
				f.log.Warn("follower: message skipped", "message", m.ID, "reason", perm.reason())
			default:
				return after, err
			}
			after = m.ID
		}
		if len(batch) < f.cfg.Batch {
			return after, nil
		}
		// More to come: save the cursor now, so that a crash during a long
		// backlog (a provider that takes a second a message) replays one
		// batch, not the whole backlog.
		if err := f.save(ctx, after, since); err != nil && ctx.Err() == nil {
			f.log.Warn("follower: saving the cursor failed; messages may be handled again", "err", err)
		}
	}
	return after, ctx.Err()
}

// follow calls the handler, turning a panic into a permanent failure: a
// handler's bug on one message skips it (logged with its stack), rather
// than stopping the process, and again at each restart, since the cursor
// would still be before it.
func (f *Follower) follow(ctx context.Context, m core.Message, c core.Conversation) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f.log.Error("follower: handler panicked", "message", m.ID, "panic", r, "stack", string(debug.Stack()))
			err = Permanent(fmt.Sprintf("the handler failed on it (%v)", r), nil)
		}
	}()
	return f.cfg.Handler.Follow(ctx, m, c)
}

// Wake makes the follower read the log now.
func (f *Follower) Wake() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func nextBackoff(d time.Duration) time.Duration {
	switch {
	case d <= 0:
		return time.Second
	case d >= time.Minute:
		return time.Minute
	}
	return 2 * d
}
