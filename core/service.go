package core

import (
	"cmp"
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
	"unicode/utf8"
)

// Config is the routing policy (the routing section of kefu.yaml).
type Config struct {
	Strategy        Strategy
	MaxOpenPerAgent int           // routing stops giving an agent work at this many open conversations
	ReopenWithin    time.Duration // a customer message to a resolved conversation younger than this reopens it
	OfflineReply    string        // sent once per conversation when nobody is available; "" disables it
	// BusyReply is sent once per conversation that waits while agents are
	// available but none has room; PositionPlaceholder in it becomes the
	// conversation's place in the queue. "" disables it.
	BusyReply string
	// Redrain is how often Run drains again while the last drain left the
	// queue waiting (0: DefaultRedrain).
	Redrain time.Duration
	// OfflineAfter is how long nobody must have been available before Run
	// sends the offline reply to the conversations still waiting (0:
	// DefaultOfflineAfter), so that an agent's connection dropping for a
	// moment does not send it.
	OfflineAfter time.Duration
}

// PositionPlaceholder, in Config.BusyReply, is replaced by the
// conversation's place in the queue (1: the next one served).
const PositionPlaceholder = "{position}"

// NumberPlaceholder, in Config.OfflineReply and Config.BusyReply, is
// replaced by the conversation's number ("#123"), which the customer can
// quote: agents see it in every channel.
const NumberPlaceholder = "{number}"

// DefaultRedrain is Config.Redrain's default.
const DefaultRedrain = 2 * time.Second

// DefaultOfflineAfter is Config.OfflineAfter's default.
const DefaultOfflineAfter = 30 * time.Second

// offlinePage is how many waiting conversations the offline pass reads at
// a time (the stores' largest page). A variable for tests.
var offlinePage = 500

// Service is the session-and-agent core: every channel hands customer
// messages to Ingest, and every agent action (from the console, Work WeChat,
// Slack…) goes through its methods, so routing and the rules of DESIGN.md
// hold whatever the channel. Safe for concurrent use.
type Service struct {
	store    Store
	presence Presence
	notify   Notifier
	cfg      Config
	picker   *Picker
	now      func() time.Time
	log      *slog.Logger
	// declined holds, per conversation sent back to the queue, the agent
	// who had it: routing gives it to someone else (see declineFor). It is
	// this node's view of the declines every node records in the store
	// (loadDeclines).
	declined   sync.Map      // conversation ID → declined
	declineSeq atomic.Uint64 // numbers the declines this node records
	// delivers reports whether a channel instance delivers outgoing messages
	// through the outbox (external providers). Channels that read from
	// sockets (web) do not.
	delivers func(channel string) bool
	// window is the channel instance's reply window (0: none).
	window func(channel string) time.Duration

	drainMu sync.Mutex
	// waitMu guards the drain waiting for drainMu on behalf of new
	// conversations (drainFor): whether there is one, and the conversations
	// left to it.
	waitMu       sync.Mutex
	drainWaiting bool
	leftToDrain  []int64
	// replies runs the automatic replies of conversations a drain served
	// for others (drainFor), off its caller's path. Once Run has begun to
	// wait for them (repliesWaited), none is added: a WaitGroup may not
	// grow from zero while it is waited for.
	replies       sync.WaitGroup
	repliesMu     sync.RWMutex
	repliesWaited bool
	// full is set when the last drain left conversations waiting for lack of
	// capacity; a new conversation then only joins the back of the queue.
	// Anything that may free capacity on this node clears it, and Run drains
	// again while it is set (capacity freed on another node).
	// restoring is set while RestorePresence runs: presence changes do
	// not drain (its caller drains once after).
	restoring atomic.Bool

	fullMu sync.Mutex
	full   bool
	// failed is set when the last drain failed: Run tries again.
	failed bool
	// skippedDeclined is set when the last drain left a conversation
	// waiting for another agent than the one who sent it back: Run drains
	// again (the decline may have ended).
	skippedDeclined bool
	// For offlineWaiting: sawSomeone, that a drain on this node has found
	// someone available (agents reconnecting after a restart are not
	// "everyone leaving"); nobodySince, when a drain first found nobody
	// after that (zero: someone was there at the last drain); offlineSent,
	// that Run has sent the offline reply to those waiting since then.
	sawSomeone  bool
	nobodySince time.Time
	offlineSent bool
	// capacityGen counts capacityChanged calls (under fullMu): a drain marks
	// the queue full only if none came since it started, or it could undo
	// the clearing of one whose drain already read the queue.
	capacityGen uint64
	// accountsMu serialises agent account changes (accounts.go), so that
	// the last-admin check holds on this node.
	accountsMu sync.Mutex
}

// Deps are the Service's collaborators.
type Deps struct {
	Store    Store
	Presence Presence
	Notifier Notifier
	// Delivers reports whether a channel instance delivers outgoing messages
	// through the outbox. nil: none do.
	Delivers func(channel string) bool
	// Window returns a channel instance's reply window: how long after the
	// customer's last message the provider lets kefu write freely
	// (WhatsApp 24 h, WeChat 48 h). 0 or nil: no window.
	Window func(channel string) time.Duration
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: slog.Default()
}

// NewService returns a Service. It does not drain the queue; call Drain once
// the channels are up.
func NewService(cfg Config, d Deps) *Service {
	s := &Service{
		store:    d.Store,
		presence: d.Presence,
		notify:   d.Notifier,
		cfg:      cfg,
		picker:   NewPicker(cfg.Strategy),
		now:      d.Now,
		log:      d.Logger,
		delivers: d.Delivers,
		window:   d.Window,
	}
	if s.cfg.Redrain <= 0 {
		s.cfg.Redrain = DefaultRedrain
	}
	if s.cfg.OfflineAfter <= 0 {
		s.cfg.OfflineAfter = DefaultOfflineAfter
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.delivers == nil {
		s.delivers = func(string) bool { return false }
	}
	if s.window == nil {
		s.window = func(string) time.Duration { return 0 }
	}
	if w, ok := d.Presence.(PresenceWatcher); ok {
		w.OnChange(func(int64) { s.capacityChanged(context.Background()) })
	}
	return s
}

// Store returns the store, for read paths (history, lists) that need no rules.
func (s *Service) Store() Store { return s.store }

// Presence returns the presence the Service routes with.
func (s *Service) Presence() Presence { return s.presence }

// Config returns the routing policy.
func (s *Service) Config() Config { return s.cfg }

// Ingest records a customer's message and routes its conversation. It returns
// once the message is durable; the caller may then acknowledge it to the
// provider or client. A duplicate (same DedupKey) is returned with Duplicate
// set and triggers nothing but a greeting not yet sent. An error with a
// result that has a message means the message is stored and routed but its
// greeting failed: retrying the ingest sends it.
func (s *Service) Ingest(ctx context.Context, in Inbound) (Ingested, error) {
	if in.Channel == "" || in.ExternalID == "" {
		return Ingested{}, fmt.Errorf("%w: inbound message without channel or sender", ErrInvalid)
	}
	in.Message.Text, in.Name = StorableText(in.Message.Text), StorableText(in.Name)
	if err := checkContent(in.Message); err != nil {
		return Ingested{}, err
	}
	if in.Message.Kind == KindTemplate {
		return Ingested{}, fmt.Errorf("%w: customers do not send templates", ErrInvalid)
	}
	if in.Message.CreatedAt.IsZero() {
		in.Message.CreatedAt = s.now()
	}
	in.ReopenWithin = s.cfg.ReopenWithin
	res, err := s.store.Ingest(ctx, in)
	if err != nil {
		return res, err
	}
	if res.Duplicate {
		return res, s.greet(ctx, res, in.Greeting) // a greeting that failed the first time
	}
	ups := make([]Update, 0, len(res.Events)+1)
	for i := range res.Events {
		ups = append(ups, Update{Type: UpdateMessage, Conversation: &res.Conversation, Message: &res.Events[i]})
	}
	ups = append(ups, Update{Type: UpdateMessage, Conversation: &res.Conversation, Message: &res.Message})
	s.notify.Publish(ctx, ups...)
	gerr := s.greet(ctx, res, in.Greeting)
	switch {
	case res.Conversation.Status == StatusPending:
		s.routeNew(ctx, res.Conversation)
	case res.Reopened && res.Conversation.AssigneeID != 0:
		s.backToItsAgent(ctx, res.Conversation)
	}
	// Routed all the same; the caller's retry (a duplicate) greets again.
	return res, gerr
}

// greet appends an Inbound's greeting to the conversation of the message
// ingested (once: its dedup key).
func (s *Service) greet(ctx context.Context, res Ingested, g *Message) error {
	if g == nil {
		return nil
	}
	if _, err := s.BotMessage(ctx, res.Message.ConversationID, *g); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	return nil
}

// backToItsAgent leaves a conversation the customer reopened with the agent
// who had it, as a customer coming back expects, unless that agent was
// deactivated since: then it goes back to the queue and is routed as a new
// one is, offline or busy reply included. (An agent who is offline for now,
// or answers from Slack, which does not make them available, keeps it: they
// see it when they are back, and a console reconnecting must not lose them
// their customers. When nobody at all is available, the customer gets the
// offline reply.)
func (s *Service) backToItsAgent(ctx context.Context, c Conversation) {
	ctx = context.WithoutCancel(ctx) // the message is committed
	if back, ok := s.offInactive(ctx, c); ok {
		s.routeNew(ctx, back)
		return
	}
	// Kept by its agent, but nobody at all is available: the customer is
	// told, as a new conversation would be, once per reopening.
	if s.cfg.OfflineReply == "" {
		return
	}
	if avail, err := s.presence.Available(ctx); err != nil || len(avail) > 0 {
		return
	}
	if ends := s.WindowEnds(c); !ends.IsZero() && !s.now().Before(ends) {
		return
	}
	if _, err := s.appendAndNotify(ctx, c, Message{SenderKind: SenderBot, Visibility: Public, Kind: KindText,
		Text: strings.ReplaceAll(s.cfg.OfflineReply, NumberPlaceholder, c.Number()), DedupKey: fmt.Sprintf("o:%d:%d", c.ID, c.LastSeq)}); err != nil {
		s.log.Warn("routing: offline reply to a reopened conversation failed", "conversation", c.ID, "err", err)
	}
}

// offInactive takes a reopened conversation from its assignee when that
// agent was deactivated (or deleted) since it was theirs: it goes back to
// the queue. It returns the conversation as it is then, and whether it was
// taken back.
func (s *Service) offInactive(ctx context.Context, c Conversation) (Conversation, bool) {
	if c.AssigneeID == 0 {
		return c, false
	}
	a, err := s.store.Agent(ctx, c.AssigneeID)
	switch {
	case err == nil && a.Active:
		return c, false
	case err == nil, errors.Is(err, ErrNotFound):
		var back Changed
		if back, err = s.assign(ctx, c.ID, 0, c.AssigneeID, 0, EventUnassigned, 0); err == nil {
			return back.Conversation, true
		}
		if errors.Is(err, ErrConflict) {
			return c, false // changed meanwhile (taken, transferred, closed): leave it
		}
	}
	s.log.Warn("routing: reopened conversation left with its agent", "conversation", c.ID, "agent", c.AssigneeID, "err", err)
	return c, false
}

// routeNew routes a conversation that is waiting: it drains the queue (which
// serves older conversations first) and, if the conversation is left
// waiting, tells the customer why (waitingReply).
func (s *Service) routeNew(ctx context.Context, c Conversation) {
	// The message is committed: routing it and its automatic reply must not
	// depend on the caller (a webhook, a socket) staying until they are done.
	ctx = context.WithoutCancel(ctx)
	s.fullMu.Lock()
	full := s.full
	s.fullMu.Unlock()
	drained := true // full: the last drain found nobody with room
	if !full {
		var handled bool
		if handled, drained = s.drainFor(ctx, c.ID); !handled {
			return // left to the waiting drain, and its reply
		}
	}
	s.waitingReply(ctx, c.ID, drained)
}

// waitingReply tells the customer of conversation id, which a drain left
// waiting, why: the offline reply when nobody is available, the busy reply
// when agents are but the drain (drained: it ran) found none with room. It
// reports an error only if reading or sending failed.
func (s *Service) waitingReply(ctx context.Context, id int64, drained bool) error {
	if s.cfg.OfflineReply == "" && s.cfg.BusyReply == "" {
		return nil
	}
	avail, err := s.presence.Available(ctx)
	if err != nil {
		return err
	}
	switch {
	case len(avail) == 0:
		return s.autoReply(ctx, id, s.cfg.OfflineReply, "o")
	case drained && s.declinedBy(id, s.now()) == 0:
		// A conversation sent back to the queue waits for another agent
		// than the one who sent it back, who may have room: not "busy".
		return s.autoReply(ctx, id, s.cfg.BusyReply, "b")
	}
	return nil // the drain failed: agents may have room
}

// offlineReply sends the offline reply to conversation id if nobody is
// available (see autoReply).
func (s *Service) offlineReply(ctx context.Context, id int64) error {
	if s.cfg.OfflineReply == "" {
		return nil
	}
	avail, err := s.presence.Available(ctx)
	if err != nil || len(avail) > 0 {
		return err
	}
	return s.autoReply(ctx, id, s.cfg.OfflineReply, "o")
}

// autoReply sends text to conversation id as the bot if it is still
// waiting and its channel's reply window (if any) is open, once per
// conversation and kind ("o" offline, "b" busy), cluster-wide: the dedup
// key is the kind and the ID. A busy reply gets the conversation's place
// in the queue for PositionPlaceholder. It reports an error only if
// reading or sending failed.
func (s *Service) autoReply(ctx context.Context, id int64, text, kind string) error {
	if text == "" {
		return nil
	}
	key := kind + ":" + strconv.FormatInt(id, 10)
	// Sent already (a waiting customer writing again): one read, not the
	// checks and a write the store would refuse.
	switch _, err := s.store.MessageByDedup(ctx, key); {
	case err == nil:
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	}
	cur, err := s.store.Conversation(ctx, id)
	if err != nil || cur.Status != StatusPending {
		return err
	}
	if ends := s.WindowEnds(cur); !ends.IsZero() && !s.now().Before(ends) {
		return nil // the provider would refuse it
	}
	if kind == "b" && strings.Contains(text, PositionPlaceholder) {
		n, err := s.store.QueuePosition(ctx, id)
		if err != nil || n == 0 {
			return err // served meanwhile
		}
		text = strings.ReplaceAll(text, PositionPlaceholder, strconv.Itoa(n))
	}
	text = strings.ReplaceAll(text, NumberPlaceholder, cur.Number())
	_, err = s.appendAndNotify(ctx, cur, Message{
		SenderKind: SenderBot,
		Visibility: Public,
		Kind:       KindText,
		Text:       text,
		DedupKey:   key,
	})
	if err != nil {
		s.log.Warn("routing: automatic reply failed", "conversation", id, "kind", kind, "err", err)
	}
	return err
}

// Drain assigns waiting conversations, oldest first, to available agents
// with capacity, until the queue is empty or nobody has room. Each page of
// the queue is planned at once and handed to the store in one AssignAll, so
// that a burst of new conversations costs a commit per page, not one each.
func (s *Service) Drain(ctx context.Context) error { return s.drain(ctx, nil) }

// drainFor drains for conversation conv, committed before the call. When
// another drainFor is already waiting for the running drain to finish, it
// leaves conv to that one and reports false at once: that drain has not
// read the queue yet, so it will serve conv too, and it then decides on
// conv's automatic reply as routeNew would have. A burst of new conversations
// (every visitor of a busy page writing at once) then costs two drains at a
// time, not one per conversation, each ingest waiting for all those before
// it.
//
// Since others count on it, the waiting drain runs to the end even if its
// own caller goes away (routeNew detaches ctx), and a failed drain is tried
// again twice.
func (s *Service) drainFor(ctx context.Context, conv int64) (handled, drained bool) {
	s.waitMu.Lock()
	if s.drainWaiting {
		s.leftToDrain = append(s.leftToDrain, conv)
		s.waitMu.Unlock()
		return false, false
	}
	s.drainWaiting = true
	s.waitMu.Unlock()
	var left []int64
	err := s.drain(ctx, func() {
		s.waitMu.Lock()
		s.drainWaiting, left, s.leftToDrain = false, s.leftToDrain, nil
		s.waitMu.Unlock()
	})
	for i, wait := range drainRetries {
		if err == nil {
			break
		}
		s.log.Warn("routing: drain failed, trying again", "err", err, "attempt", i+1)
		time.Sleep(wait)
		err = s.drain(ctx, nil)
	}
	if err != nil {
		s.log.Warn("routing: drain failed", "err", err, "conversations", len(left)+1)
	}
	if len(left) > 0 {
		// The others' replies are not this caller's to wait for: a burst
		// of new conversations would hold its answer for one reply each.
		// Run waits for them.
		drained := err == nil
		reply := func() {
			for _, id := range left {
				s.waitingReply(ctx, id, drained)
			}
		}
		s.repliesMu.RLock()
		if s.repliesWaited {
			s.repliesMu.RUnlock()
			reply() // Run has ended
		} else {
			s.replies.Go(reply)
			s.repliesMu.RUnlock()
		}
	}
	return true, err == nil
}

// repliesWait bounds how long Run, as it ends, waits for the automatic
// replies still being sent.
const repliesWait = 10 * time.Second

// drainRetries are the pauses before drainFor tries a failed drain again.
var drainRetries = []time.Duration{50 * time.Millisecond, 500 * time.Millisecond}

// Run drains the queue again every Config.Redrain while the last drain on
// this node left it waiting (nobody had room, or the drain failed), until
// ctx ends. Capacity freed on this node drains at once (capacityChanged);
// in a cluster, capacity freed on another node drains the queue there, but
// this node's full flag would stay set, and its new conversations would
// only join the queue with an agent free: Run bounds that wait.
//
// While the store is failing, it logs the first failure and the recovery,
// not every attempt.
func (s *Service) Run(ctx context.Context) error {
	// The automatic replies started for others' conversations finish
	// before Run returns (and the node closes the store), unless the store
	// hangs: then for repliesWait at most.
	defer func() {
		s.repliesMu.Lock()
		s.repliesWaited = true
		s.repliesMu.Unlock()
		done := make(chan struct{})
		go func() { s.replies.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(repliesWait):
			s.log.Warn("routing: automatic replies still being sent; stopping without them")
		}
	}()
	t := time.NewTicker(s.cfg.Redrain)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.fullMu.Lock()
		again := s.full || s.failed || s.skippedDeclined
		s.fullMu.Unlock()
		if !again {
			continue
		}
		switch err := s.Drain(ctx); {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			s.log.Warn("routing: drain failed; trying again every "+s.cfg.Redrain.String(), "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("routing: drain succeeded again")
			failing = false
		}
		s.offlineWaiting(ctx)
	}
}

// offlineWaiting sends the offline reply, once, to the conversations that
// were waiting when everyone left (agents at capacity, then gone): a
// conversation that arrives with nobody available gets it from routeNew,
// but those already queued would otherwise wait in silence. It waits until
// nobody has been available for Config.OfflineAfter, and covers every
// conversation waiting.
func (s *Service) offlineWaiting(ctx context.Context) {
	if s.cfg.OfflineReply == "" {
		return
	}
	s.fullMu.Lock()
	since, sent := s.nobodySince, s.offlineSent
	s.fullMu.Unlock()
	if since.IsZero() || sent || s.now().Sub(since) < s.cfg.OfflineAfter {
		return
	}
	// Every waiting conversation, a page at a time, newest first (the
	// queue's own read stops at one page): a pass tried again after a
	// failure finds those answered already and skips them (autoReply's
	// dedup key).
	for before := int64(0); ; {
		page, err := s.store.Conversations(ctx, ConversationFilter{Statuses: []ConversationStatus{StatusPending},
			BeforeID: before, Limit: offlinePage})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("routing: offline replies to the queue", "err", err)
			}
			return
		}
		for _, c := range page {
			// Each checks again that nobody is available; a failure leaves
			// the pass to be tried again at the next tick.
			if err := s.offlineReply(ctx, c.ID); err != nil {
				return
			}
		}
		if len(page) < offlinePage {
			break
		}
		before = page[len(page)-1].ID
	}
	s.fullMu.Lock()
	if s.nobodySince.Equal(since) {
		s.offlineSent = true
	}
	s.fullMu.Unlock()
}

// noteAvailable records whether a drain found anyone available, for
// offlineWaiting.
func (s *Service) noteAvailable(anyone bool) {
	s.fullMu.Lock()
	switch {
	case anyone:
		s.sawSomeone, s.nobodySince = true, time.Time{}
	case s.sawSomeone && s.nobodySince.IsZero():
		s.nobodySince, s.offlineSent = s.now(), false
	}
	s.fullMu.Unlock()
}

// drain is Drain; locked, if not nil, is called once drainMu is held,
// before the queue is read.
func (s *Service) drain(ctx context.Context, locked func()) (err error) {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	if locked != nil {
		locked()
	}
	defer func() {
		s.fullMu.Lock()
		s.failed = err != nil
		s.fullMu.Unlock()
	}()
	s.fullMu.Lock()
	s.skippedDeclined = false
	s.fullMu.Unlock()
	gen := s.capacity()
	full := map[int64]bool{}     // agents the store found at capacity in this drain
	excluded := map[int64]bool{} // agents the store refused as deactivated
	// A page handed to the store may commit even if ctx ends meanwhile
	// (core.Store): the drain waits for it regardless, so that every
	// assignment made is published, and checks ctx between pages.
	wctx := context.WithoutCancel(ctx)
	// The queue is read from its head each time round: those assigned
	// have left it, those held back by a decline are still there, so the
	// read reaches past them.
	limit := queuePage
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		avail, err := s.presence.Available(ctx)
		if err != nil {
			return err
		}
		avail = slices.DeleteFunc(avail, func(id int64) bool { return excluded[id] })
		s.noteAvailable(len(avail) > 0)
		if len(avail) == 0 {
			s.setFull(gen, true)
			return nil
		}
		queue, err := s.store.Queue(ctx, limit)
		if err != nil {
			return err
		}
		if len(queue) == 0 {
			s.setFull(gen, false)
			return nil
		}
		// After the queue: a decline is written before its unassignment
		// commits, so every conversation read here that was sent back,
		// on any node, has its decline read here.
		s.loadDeclines(ctx)
		counts, err := s.store.OpenCounts(ctx)
		if err != nil {
			return err
		}
		for id := range full {
			counts[id] = s.cfg.MaxOpenPerAgent
		}
		held := 0 // conversations of this read held back by a decline
		for waiting := queue; len(waiting) > 0; {
			if err := ctx.Err(); err != nil {
				return err
			}
			plan, skipped := s.plan(waiting, avail, counts)
			if len(skipped) > 0 {
				// Left waiting for another agent than the one who sent
				// them back: the plan follows the others in order, and
				// Run drains again (the decline ends after declineFor).
				waiting = slices.DeleteFunc(slices.Clone(waiting), func(c Conversation) bool { return skipped[c.ID] })
				held += len(skipped)
				s.fullMu.Lock()
				s.skippedDeclined = true
				s.fullMu.Unlock()
			}
			if len(plan) == 0 {
				if len(waiting) == 0 {
					break // every one left is held back: read on past them
				}
				s.setFull(gen, len(skipped) == 0) // skipped: someone has room, not for those
				return nil
			}
			done, err := s.store.AssignAll(wctx, plan)
			if len(done) > 0 {
				ups := make([]Update, len(done))
				for i := range done {
					s.endDecline(wctx, done[i].Conversation.ID) // served: the decline is over
					counts[done[i].Conversation.AssigneeID]++
					ups[i] = Update{Type: UpdateMessage, Conversation: &done[i].Conversation, Message: &done[i].Event}
				}
				s.notify.Publish(wctx, ups...)
			}
			waiting = waiting[len(done):] // all of the plan when err is nil
			switch {
			case err == nil:
			case errors.Is(err, ErrForbidden):
				// Deactivated on a node whose news has not reached this
				// one's presence yet: plan the rest without that agent.
				agent := plan[len(done)].AgentID
				excluded[agent] = true
				avail = slices.DeleteFunc(avail, func(id int64) bool { return id == agent })
			case errors.Is(err, ErrCapacity):
				// Its count moved under us (another node, an agent's own
				// take): plan the rest again without that agent.
				agent := plan[len(done)].AgentID
				full[agent] = true
				counts[agent] = s.cfg.MaxOpenPerAgent
			case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
				waiting = waiting[1:] // taken or changed meanwhile: not waiting any more
			default:
				return err
			}
		}
		if len(queue) < limit {
			s.setFull(gen, false)
			return nil
		}
		next := min(queuePage+held, maxQueueRead)
		if held >= next {
			// Every conversation a read reaches is held back: those
			// behind wait until declines end (Run drains again).
			s.setFull(gen, false)
			return nil
		}
		limit = next
	}
}

// queuePage is how many waiting conversations a drain reads at a time.
const queuePage = 100

// maxQueueRead is the most Store.Queue answers at once (the stores'
// bound): declines beyond it hold back the queue behind them.
const maxQueueRead = 500

// plan picks an agent for each conversation of waiting in turn, as if each
// pick were assigned before the next, and stops at the first conversation
// nobody has room for. A conversation sent back to the queue does not go to
// the agent who had it (declinedBy): with nobody else with room it is
// skipped, and the ones after it are planned. It records each pick with the
// picker: when the store refuses one, the picks after it were recorded
// without being assigned, which moves a round robin turn on by as many.
func (s *Service) plan(waiting []Conversation, avail []int64, counts map[int64]int) (plan []Assignment, skipped map[int64]bool) {
	cands := make([]Candidate, len(avail))
	for i, id := range avail {
		cands[i] = Candidate{AgentID: id, Open: counts[id]}
	}
	now := s.now()
	for _, c := range waiting {
		order := s.picker.Order(cands, s.cfg.MaxOpenPerAgent)
		if len(order) == 0 {
			break
		}
		agentID := order[0]
		if no := s.declinedBy(c.ID, now); no != 0 {
			// Sent back to the queue by its agent: it goes to another.
			agentID = 0
			for _, id := range order {
				if id != no {
					agentID = id
					break
				}
			}
			if agentID == 0 {
				if skipped == nil {
					skipped = map[int64]bool{}
				}
				skipped[c.ID] = true
				continue
			}
		}
		s.picker.Assigned(agentID)
		for i := range cands {
			if cands[i].AgentID == agentID {
				cands[i].Open++
			}
		}
		plan = append(plan, s.assignment(c.ID, agentID, 0, s.cfg.MaxOpenPerAgent, EventAssigned, 0, now))
	}
	return plan, skipped
}

// capacity returns the count of capacityChanged calls so far, for setFull.
func (s *Service) capacity() uint64 {
	s.fullMu.Lock()
	defer s.fullMu.Unlock()
	return s.capacityGen
}

// setFull records what a drain that started at capacity generation gen
// found: the queue left waiting for lack of room (v), or not. A drain that
// found no room says so only if capacity has not changed since it started.
func (s *Service) setFull(gen uint64, v bool) {
	s.fullMu.Lock()
	if !v || s.capacityGen == gen {
		s.full = v
	}
	s.fullMu.Unlock()
}

// noteCapacity records that an agent may have room or has come online.
func (s *Service) noteCapacity() {
	s.fullMu.Lock()
	s.capacityGen++
	s.full = false
	s.fullMu.Unlock()
}

// capacityChanged is called when an agent may have room or has come online.
func (s *Service) capacityChanged(ctx context.Context) {
	s.noteCapacity()
	if s.restoring.Load() {
		return // RestorePresence's caller drains once it is done
	}
	if err := s.Drain(ctx); err != nil {
		s.log.Warn("routing: drain failed", "err", err)
	}
}

func (s *Service) assign(ctx context.Context, convID, agentID, from int64, maxOpen int, typ EventType, by int64) (Changed, error) {
	ch, err := s.store.Assign(ctx, s.assignment(convID, agentID, from, maxOpen, typ, by, s.now()))
	if err != nil {
		return ch, err
	}
	s.notify.Publish(ctx, Update{Type: UpdateMessage, Conversation: &ch.Conversation, Message: &ch.Event})
	return ch, nil
}

// assignment is the store's request for assign, with its event.
func (s *Service) assignment(convID, agentID, from int64, maxOpen int, typ EventType, by int64, at time.Time) Assignment {
	vis := Public
	if agentID == 0 {
		vis = Internal
	}
	return Assignment{
		ConversationID: convID,
		AgentID:        agentID,
		From:           from,
		MaxOpen:        maxOpen,
		At:             at,
		Event: Message{
			SenderKind: SenderSystem,
			SenderID:   by,
			Visibility: vis,
			Kind:       KindEvent,
			Event:      &Event{Type: typ, AgentID: agentID, FromID: from, ByID: by},
		},
	}
}

// Take assigns an unassigned conversation to the agent asking for it. Of two
// agents taking one conversation at once, exactly one succeeds; the other
// gets ErrConflict. Taking one that is the agent's already answers it as it
// is (a take sent again after its answer was lost). An explicit take is not
// bound by max_open_per_agent.
func (s *Service) Take(ctx context.Context, agentID, convID int64) (Conversation, error) {
	if _, err := s.activeAgent(ctx, agentID); err != nil {
		return Conversation{}, err
	}
	ch, err := s.assign(ctx, convID, agentID, 0, 0, EventAssigned, agentID)
	if err == nil {
		s.forgetDecline(ctx, convID)
	}
	if errors.Is(err, ErrConflict) {
		if cur, rerr := s.store.Conversation(ctx, convID); rerr == nil {
			switch {
			case cur.Status == StatusResolved:
				return cur, fmt.Errorf("%w: #%d is resolved: reopen it first", ErrConflict, convID)
			case cur.AssigneeID == agentID:
				return cur, nil
			case cur.AssigneeID != 0:
				return cur, fmt.Errorf("%w: #%d is another agent's", ErrConflict, convID)
			}
		}
	}
	return ch.Conversation, err
}

// Transfer moves a conversation from its current assignee to another agent
// (toID 0: back to the queue). by must be the current assignee or an admin.
func (s *Service) Transfer(ctx context.Context, by, convID, toID int64) (Conversation, error) {
	actor, err := s.activeAgent(ctx, by)
	if err != nil {
		return Conversation{}, err
	}
	c, err := s.store.Conversation(ctx, convID)
	if err != nil {
		return Conversation{}, err
	}
	if c.AssigneeID != by && actor.Role != RoleAdmin {
		return Conversation{}, fmt.Errorf("%w: only the assignee or an admin may transfer #%d", ErrForbidden, convID)
	}
	if c.Status == StatusResolved {
		return Conversation{}, fmt.Errorf("%w: #%d is resolved: reopen it first", ErrConflict, convID)
	}
	typ := EventTransferred
	if toID == 0 {
		if c.AssigneeID == 0 && c.Status == StatusPending {
			// Already waiting: unassigning again would only send it to
			// the back of the queue. Nothing changes.
			return c, nil
		}
		typ = EventUnassigned
	} else if _, err := s.activeAgent(ctx, toID); err != nil {
		return Conversation{}, err
	}
	if c.AssigneeID == 0 {
		typ = EventAssigned
	}
	if toID == 0 && c.AssigneeID != 0 {
		// Before the unassignment commits: a drain right after it must
		// know.
		s.recordDecline(ctx, convID, c.AssigneeID)
	}
	ch, err := s.assign(ctx, convID, toID, c.AssigneeID, 0, typ, by)
	if err != nil {
		if toID == 0 {
			s.endDecline(context.WithoutCancel(ctx), convID)
		}
		return Conversation{}, err
	}
	if toID != 0 {
		s.forgetDecline(ctx, convID)
	}
	s.capacityChanged(ctx)
	return s.current(ctx, ch.Conversation), nil
}

// declined is the agent who gave a conversation back to the queue (or had
// it taken back by an admin), and when; value is the store setting that
// records it ("" when it could not be written: this node's alone).
type declined struct {
	agentID int64
	at      time.Time
	value   string
	seq     uint64 // recorded here: declineSeq's; read from the store: 0
}

// declineFor is how long routing keeps a conversation sent back to the
// queue from the agent who had it: it goes to another agent, or waits for
// one. Every node's routing keeps it: it is recorded in the store
// (declinePrefix).
const declineFor = time.Hour

// declinePrefix begins the store settings that record declines:
// "routing.declined.CONVID" = "AGENTID UNIXNANO".
const declinePrefix = "routing.declined."

func declineKey(convID int64) string { return declinePrefix + strconv.FormatInt(convID, 10) }

// recordDecline records that agentID sent conversation convID back to the
// queue, here and in the store for the other nodes. A failed write leaves
// the decline to this node, logged.
func (s *Service) recordDecline(ctx context.Context, convID, agentID int64) {
	now := s.now()
	d := declined{agentID: agentID, at: now, value: fmt.Sprintf("%d %d", agentID, now.UnixNano())}
	if err := s.store.PutSetting(ctx, declineKey(convID), d.value); err != nil {
		s.log.Warn("routing: could not record a conversation sent back to the queue; other nodes may give it back to its agent",
			"conversation", convID, "err", err)
		d.value = ""
	}
	// Numbered once written: a drain that read the store before the write
	// keeps this decline (loadDeclines).
	d.seq = s.declineSeq.Add(1)
	s.declined.Store(convID, d)
}

// endDecline forgets conversation convID's decline, here and in the store
// (if it is still the one this node knows).
func (s *Service) endDecline(ctx context.Context, convID int64) {
	v, ok := s.declined.LoadAndDelete(convID)
	if !ok || v.(declined).value == "" {
		return
	}
	if _, err := s.store.DeleteSetting(ctx, declineKey(convID), v.(declined).value); err != nil {
		s.log.Warn("routing: could not forget a served conversation's decline; it runs out by itself", "conversation", convID, "err", err)
	}
}

// forgetDecline ends conversation convID's decline, whichever node recorded
// it: the conversation is served (taken, or given to an agent), and if it
// is ever back in the queue without a new decline (its agent deactivated,
// its customer reopening it), no agent is kept from it.
func (s *Service) forgetDecline(ctx context.Context, convID int64) {
	s.declined.Delete(convID)
	ctx = context.WithoutCancel(ctx)
	v, err := s.store.Setting(ctx, declineKey(convID))
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err == nil {
		_, err = s.store.DeleteSetting(ctx, declineKey(convID), v)
	}
	if err != nil {
		s.log.Warn("routing: could not forget a served conversation's decline; it runs out by itself", "conversation", convID, "err", err)
	}
}

// loadDeclines reads the declines every node recorded into this node's
// view, after each read of the queue that found someone waiting (a decline
// is written before its conversation is back in the queue): the store's
// replace the view's, those it no longer has (served, or expired, on
// another node) are forgotten, and expired ones are removed. A decline this node could not write stays in
// its view until it expires. A read that fails keeps the view as it is.
func (s *Service) loadDeclines(ctx context.Context) {
	now := s.now()
	before := s.declineSeq.Load() // one recorded during the read is kept
	stored := map[int64]bool{}
	for after := ""; ; {
		page, err := s.store.Settings(ctx, declinePrefix, after, 500)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("routing: reading the conversations sent back to the queue", "err", err)
			}
			return
		}
		for _, kv := range page {
			id, d, ok := parseDecline(kv)
			if !ok || now.Sub(d.at) > declineFor {
				_, _ = s.store.DeleteSetting(ctx, kv.Key, kv.Value)
				continue
			}
			stored[id] = true
			if cur, ok := s.declined.Load(id); !ok || cur.(declined).seq <= before {
				s.declined.Store(id, d) // not over one recorded here during the read
			}
		}
		if len(page) < 500 {
			break
		}
		after = page[len(page)-1].Key
	}
	s.declined.Range(func(k, v any) bool {
		if d := v.(declined); (d.value != "" && !stored[k.(int64)] && d.seq <= before) || now.Sub(d.at) > declineFor {
			s.declined.Delete(k)
		}
		return true
	})
}

// parseDecline reads a decline setting.
func parseDecline(kv Setting) (convID int64, d declined, ok bool) {
	id, err1 := strconv.ParseInt(strings.TrimPrefix(kv.Key, declinePrefix), 10, 64)
	agent, at, found := strings.Cut(kv.Value, " ")
	a, err2 := strconv.ParseInt(agent, 10, 64)
	ns, err3 := strconv.ParseInt(at, 10, 64)
	if !found || errors.Join(err1, err2, err3) != nil {
		return 0, declined{}, false
	}
	return id, declined{agentID: a, at: time.Unix(0, ns), value: kv.Value}, true
}

// declinedBy returns the agent routing does not give conversation id to,
// or 0.
func (s *Service) declinedBy(id int64, now time.Time) int64 {
	v, ok := s.declined.Load(id)
	if !ok {
		return 0
	}
	d := v.(declined)
	if now.Sub(d.at) > declineFor {
		s.declined.Delete(id)
		return 0
	}
	return d.agentID
}

// current returns c as the store has it now (routing may have assigned it
// since), or c if it cannot be read.
func (s *Service) current(ctx context.Context, c Conversation) Conversation {
	if cur, err := s.store.Conversation(ctx, c.ID); err == nil {
		return cur
	}
	return c
}

// Close resolves a conversation. Any active agent may close.
func (s *Service) Close(ctx context.Context, by, convID int64) (Conversation, error) {
	return s.setStatus(ctx, by, convID, StatusResolved, EventResolved, true)
}

// Reopen reopens a resolved conversation: back to its assignee, or to the
// queue (and routed) when it had none or that agent has been deactivated
// since. ErrConflict when it is not resolved, or its customer has a newer
// conversation (refuseOlder).
func (s *Service) Reopen(ctx context.Context, by, convID int64) (Conversation, error) {
	c, err := s.setStatus(ctx, by, convID, StatusOpen, EventReopened, true)
	if errors.Is(err, ErrConflict) && !isOlder(err) {
		// Still resolved: the store refused a second live conversation
		// for the customer, one that began after refuseOlder looked.
		if cur, rerr := s.store.Conversation(ctx, convID); rerr == nil && cur.Status == StatusResolved {
			return cur, cmp.Or(s.refuseOlder(ctx, cur), fmt.Errorf("%w: #%d cannot be reopened: its customer has a newer conversation open", ErrConflict, convID))
		}
	}
	return c, err
}

// olderError is refuseOlder's refusal, an ErrConflict.
type olderError struct{ conv, newest Conversation }

func (e *olderError) Error() string {
	return fmt.Sprintf("%v: #%d cannot be reopened: its customer has a newer conversation (%s, %s): reply there",
		ErrConflict, e.conv.ID, e.newest.Number(), e.newest.Status)
}

func (e *olderError) Unwrap() error { return ErrConflict }

func isOlder(err error) bool { _, ok := errors.AsType[*olderError](err); return ok }

// refuseOlder refuses to reopen c (an agent's reopen or reply) when its
// customer has a newer conversation, in any state: only the newest one
// reopens. A web visitor's app resumes from its newest conversation, so a
// reply in an older one would reach it only while it is connected; and the
// customer's next message goes to the newest. nil when c is the newest, or
// the check cannot be made (the store's own refusal of a second live
// conversation still holds).
func (s *Service) refuseOlder(ctx context.Context, c Conversation) error {
	newest, err := s.store.Conversations(ctx, ConversationFilter{Channel: c.Channel, ExternalID: c.ExternalID, Limit: 1})
	if err != nil || len(newest) == 0 || newest[0].ID <= c.ID {
		return nil
	}
	return &olderError{conv: c, newest: newest[0]}
}

// setStatus resolves or reopens a conversation. A reopened one that waits
// in the queue is routed when route is set; an agent replying leaves it
// unrouted, to take it.
func (s *Service) setStatus(ctx context.Context, by, convID int64, to ConversationStatus, typ EventType, route bool) (Conversation, error) {
	if _, err := s.activeAgent(ctx, by); err != nil {
		return Conversation{}, err
	}
	cur, err := s.store.Conversation(ctx, convID)
	if err != nil {
		return Conversation{}, err
	}
	if (to == StatusResolved) == (cur.Status == StatusResolved) {
		return cur, fmt.Errorf("%w: #%d is already %s", ErrConflict, convID, cur.Status)
	}
	if to == StatusOpen {
		if err := s.refuseOlder(ctx, cur); err != nil {
			return cur, err
		}
	}
	ch, err := s.store.SetStatus(ctx, StatusChange{
		ConversationID: convID,
		Status:         to,
		From:           cur.Status, // optimistic: fails if it moved meanwhile
		At:             s.now(),
		Event: Message{
			SenderKind: SenderSystem,
			SenderID:   by,
			Visibility: Public,
			Kind:       KindEvent,
			Event:      &Event{Type: typ, ByID: by},
		},
	})
	if err != nil {
		return Conversation{}, err
	}
	s.notify.Publish(ctx, Update{Type: UpdateMessage, Conversation: &ch.Conversation, Message: &ch.Event})
	if to == StatusResolved {
		s.capacityChanged(ctx)
		return ch.Conversation, nil
	}
	// The reopen is committed: what follows does not depend on the caller.
	c, _ := s.offInactive(context.WithoutCancel(ctx), ch.Conversation)
	if route && c.Status == StatusPending {
		s.routeNew(ctx, c)
		c = s.current(ctx, c)
	}
	return c, nil
}

// Reply sends an agent's public message to the customer. A reply to a
// waiting conversation takes it for the agent; a reply to a resolved one
// reopens it (ErrConflict when the customer has a newer conversation).
// The message is committed first and then delivered through the
// conversation's channel (the outbox) or its sockets.
func (s *Service) Reply(ctx context.Context, agentID, convID int64, m Message) (Message, error) {
	m.SenderKind, m.SenderID, m.Visibility = SenderAgent, agentID, Public
	return s.agentMessage(ctx, agentID, convID, m, false)
}

// ReplyAsOwner is Reply for channels where agents answer only their own
// conversations and waiting ones (Work WeChat): a conversation that is
// someone else's, or that someone else takes while the reply is on its
// way, is refused with ErrConflict and nothing is stored, so that a
// customer never gets answers from two people by accident.
func (s *Service) ReplyAsOwner(ctx context.Context, agentID, convID int64, m Message) (Message, error) {
	m.SenderKind, m.SenderID, m.Visibility = SenderAgent, agentID, Public
	return s.agentMessage(ctx, agentID, convID, m, true)
}

// Note adds an internal note, which customers never see.
func (s *Service) Note(ctx context.Context, agentID, convID int64, m Message) (Message, error) {
	m.SenderKind, m.SenderID, m.Visibility = SenderAgent, agentID, Internal
	return s.agentMessage(ctx, agentID, convID, m, false)
}

// agentMessage stores m from agentID in convID; with own, a public m only
// in a conversation that is agentID's or nobody's (ReplyAsOwner).
func (s *Service) agentMessage(ctx context.Context, agentID, convID int64, m Message, own bool) (Message, error) {
	m.Text = StorableText(m.Text)
	if err := checkContent(m); err != nil {
		return Message{}, err
	}
	if _, err := s.activeAgent(ctx, agentID); err != nil {
		return Message{}, err
	}
	if m.DedupKey != "" {
		// A resend of a stored message (its answer was lost) gets that
		// message back, before anything the first send did is done again:
		// a reopen, a take, a window closed since.
		switch prev, err := s.store.MessageByDedup(ctx, m.DedupKey); {
		case err == nil:
			return prev, nil
		case !errors.Is(err, ErrNotFound):
			return Message{}, err
		}
	}
	c, err := s.store.Conversation(ctx, convID)
	if err != nil {
		return Message{}, err
	}
	if m.Kind == KindTemplate {
		if err := s.checkTemplate(c, m); err != nil {
			return Message{}, err
		}
	}
	if own && m.Visibility == Public && c.AssigneeID != 0 && c.AssigneeID != agentID {
		// Before anything is done: not reopened for a reply refused.
		return Message{}, fmt.Errorf("%w: #%d is handled by another agent", ErrConflict, convID)
	}
	if m.Visibility == Public {
		// A template is what the provider accepts outside the window.
		if ends := s.WindowEnds(c); m.Kind != KindTemplate && !ends.IsZero() && !s.now().Before(ends) {
			return Message{}, fmt.Errorf("%w: the %s reply window of #%d closed at %s; the customer must write first",
				ErrWindowClosed, s.window(c.Channel), c.ID, ends.UTC().Format(time.RFC3339))
		}
		if c.Status == StatusResolved {
			// Not routed: the reply takes it for the agent, below, rather
			// than the queue giving it to someone else or telling the
			// customer that nobody is there.
			switch reopened, err := s.setStatus(ctx, agentID, convID, StatusOpen, EventReopened, false); {
			case err == nil:
				c = reopened
			case !errors.Is(err, ErrConflict):
				return Message{}, err
			case isOlder(err):
				return Message{}, err
			default: // reopened meanwhile, or the customer has a newer conversation open
				if c, err = s.store.Conversation(ctx, convID); err != nil {
					return Message{}, err
				}
				if c.Status == StatusResolved {
					// A reply here would reach a web visitor only while
					// connected (a resume starts from their newest).
					return Message{}, cmp.Or(s.refuseOlder(ctx, c),
						fmt.Errorf("%w: #%d is resolved and its customer has a newer conversation open: reply there", ErrConflict, convID))
				}
			}
		}
		if own && c.AssigneeID != 0 && c.AssigneeID != agentID {
			return Message{}, fmt.Errorf("%w: #%d is handled by another agent", ErrConflict, convID)
		}
		if c.AssigneeID == 0 {
			switch taken, err := s.Take(ctx, agentID, convID); {
			case err == nil:
				c = taken
			case !errors.Is(err, ErrConflict):
				if c.Status == StatusPending {
					s.routeNew(ctx, c) // not left waiting unrouted
				}
				return Message{}, err
			case own:
				// Taken meanwhile: by this agent on another path, or by
				// someone else, whose conversation it now is.
				if c, err = s.store.Conversation(ctx, convID); err != nil {
					return Message{}, err
				}
				switch {
				case c.Status == StatusResolved:
					return Message{}, fmt.Errorf("%w: #%d was closed meanwhile", ErrConflict, convID)
				case c.AssigneeID != agentID:
					return Message{}, fmt.Errorf("%w: #%d was just taken by another agent", ErrConflict, convID)
				}
			}
		}
	}
	return s.appendAndNotify(ctx, c, m)
}

// WindowEnds returns when the conversation's reply window closes: its
// channel's window after the customer's last message. Zero when the
// channel has no window.
func (s *Service) WindowEnds(c Conversation) time.Time {
	w := s.window(c.Channel)
	if w <= 0 {
		return time.Time{}
	}
	return c.LastInboundAt.Add(w)
}

// appendAndNotify appends m to c, through the outbox when c's channel
// delivers outgoing messages, and tells the Notifier.
func (s *Service) appendAndNotify(ctx context.Context, c Conversation, m Message) (Message, error) {
	deliver := m.Outgoing() && s.delivers(c.Channel)
	if m.Status == "" {
		m.Status = MsgSent
		if deliver {
			m.Status = MsgPending
		}
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = s.now()
	}
	res, err := s.store.Append(ctx, Append{ConversationID: c.ID, Message: m, Deliver: deliver})
	if err != nil || res.Duplicate {
		return res.Message, err
	}
	s.notify.Publish(ctx, Update{Type: UpdateMessage, Conversation: &res.Conversation, Message: &res.Message})
	if res.Outbox != nil {
		s.notify.Deliver(ctx, *res.Outbox)
	}
	return res.Message, nil
}

// Resend sends a failed outgoing message again as a new message linked to it.
func (s *Service) Resend(ctx context.Context, agentID, msgID int64) (Message, error) {
	old, err := s.store.Message(ctx, msgID)
	if err != nil {
		return Message{}, err
	}
	if old.Status != MsgFailed || !old.Outgoing() {
		return Message{}, fmt.Errorf("%w: only a failed outgoing message can be resent", ErrInvalid)
	}
	// The key makes a double click resend once; the resent message, should
	// it fail too, has a key of its own.
	m := Message{Kind: old.Kind, Text: old.Text, Media: old.Media, ResendOf: old.ID, DedupKey: fmt.Sprintf("r:%d", old.ID)}
	return s.Reply(ctx, agentID, old.ConversationID, m)
}

// UpdateStatus applies a delivery status a channel learned (a provider's
// status webhook) and tells the Notifier when it moved forward.
func (s *Service) UpdateStatus(ctx context.Context, u StatusUpdate) (Message, error) {
	u.Reason = StorableText(u.Reason) // a provider's text
	m, changed, err := s.store.UpdateStatus(ctx, u)
	if err != nil {
		return m, err
	}
	if changed {
		s.notify.Publish(ctx, Update{Type: UpdateStatus, Message: &m})
	}
	// Also when unchanged: a provider repeating a failure finishes a report
	// that could not be written the first time.
	if err := ReportDeliveryFailure(ctx, s.store, s.notify, m, s.now()); err != nil {
		s.log.Warn("recording a failed delivery in its conversation failed", "message", m.ID, "err", err)
	}
	return m, nil
}

// deliveryFailedPrefix begins the dedup key of the delivery_failed event of
// a message: the prefix and the message's ID.
const deliveryFailedPrefix = "failed:"

func deliveryFailedKey(id int64) string { return deliveryFailedPrefix + strconv.FormatInt(id, 10) }

// FailedMessageID returns the ID of the message a delivery_failed event
// reports.
func FailedMessageID(ev Message) (int64, bool) {
	rest, ok := strings.CutPrefix(ev.DedupKey, deliveryFailedPrefix)
	if ev.Event == nil || ev.Event.Type != EventDeliveryFailed || !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil
}

// ReportDeliveryFailure puts a reply that has failed for good in its
// conversation's log, as an internal EventDeliveryFailed event, so that
// every agent surface learns of it (the console, and the Work WeChat and
// Slack agents who follow the log): its author is told there that the
// customer did not get it. It does nothing for a message that is not a
// failed reply, and appends one event per message however often it is
// called (the event's dedup key, read first). Service.UpdateStatus calls it
// for every update of a failed message, so a report that could not be
// written is finished when the provider repeats the failure; the outbox
// calls it once the failure is stored.
func ReportDeliveryFailure(ctx context.Context, st Store, n Notifier, m Message, at time.Time) error {
	if m.Status != MsgFailed || !m.Outgoing() {
		return nil
	}
	key := deliveryFailedKey(m.ID)
	switch _, err := st.MessageByDedup(ctx, key); {
	case err == nil:
		return nil // reported already
	case !errors.Is(err, ErrNotFound):
		return err
	}
	author := int64(0)
	if m.SenderKind == SenderAgent {
		author = m.SenderID
	}
	reason := m.FailReason
	if reason == "" {
		reason = "refused by the channel"
	}
	a, err := st.Append(ctx, Append{ConversationID: m.ConversationID, Message: Message{
		SenderKind: SenderSystem, Visibility: Internal, Kind: KindEvent, Status: MsgSent, CreatedAt: at,
		Event: &Event{Type: EventDeliveryFailed, AgentID: author}, Text: reason,
		DedupKey: key,
	}})
	if err != nil || a.Duplicate {
		return err
	}
	if n != nil {
		n.Publish(ctx, Update{Type: UpdateMessage, Conversation: &a.Conversation, Message: &a.Message})
	}
	return nil
}

// MarkUpTo records a receipt (delivered or read up to a sequence number).
func (s *Service) MarkUpTo(ctx context.Context, r Receipt) error {
	if r.Status != MsgDelivered && r.Status != MsgRead {
		return fmt.Errorf("%w: receipt status must be delivered or read", ErrInvalid)
	}
	n, err := s.store.MarkUpTo(ctx, r)
	if err != nil {
		return err
	}
	if n == 0 && !r.ByContact && r.AgentID != 0 {
		// Another agent's receipt moved the messages already. The
		// assignee's is still news to their push fallback, which only
		// theirs cancels.
		c, err := s.store.Conversation(ctx, r.ConversationID)
		if err != nil {
			return err
		}
		if c.AssigneeID == r.AgentID {
			n = 1
		}
	}
	if n > 0 {
		s.notify.Publish(ctx, Update{Type: UpdateReceipt, Receipt: &r})
	}
	return nil
}

// Typing passes a typing indicator on to the conversation's other side.
func (s *Service) Typing(ctx context.Context, t Typing) {
	s.notify.Publish(ctx, Update{Type: UpdateTyping, Typing: &t})
}

// SetAway marks an agent away from routing, or back. The flag is kept
// across restarts (see RestorePresence).
func (s *Service) SetAway(ctx context.Context, agentID int64, away bool) error {
	if _, err := s.activeAgent(ctx, agentID); err != nil {
		return err
	}
	if err := s.saveFlag(ctx, flagAway, agentID, away); err != nil {
		return err
	}
	s.presence.SetAway(agentID, away)
	return nil
}

// SetOn records /on or /off from an agent-side channel. The flag is kept
// across restarts (see RestorePresence).
func (s *Service) SetOn(ctx context.Context, agentID int64, on bool) error {
	if _, err := s.activeAgent(ctx, agentID); err != nil {
		return err
	}
	if err := s.saveFlag(ctx, flagOn, agentID, on); err != nil {
		return err
	}
	if on {
		// /on is "I am here": it ends away, set in the console or before.
		if err := s.saveFlag(ctx, flagAway, agentID, false); err != nil {
			return err
		}
		s.presence.SetAway(agentID, false)
	}
	s.presence.SetOn(agentID, on)
	return nil
}

// Agents' /on and away flags are kept in the store's settings, one key
// each, so that a restart does not change who is routed to: an agent who
// said /on in Work WeChat stays on, one who set themselves away stays
// away. Presence holds them while the node runs.
const (
	flagOn   = "on"
	flagAway = "away"
)

func flagSetting(flag string, agentID int64) string {
	return "presence." + flag + "." + strconv.FormatInt(agentID, 10)
}

func (s *Service) saveFlag(ctx context.Context, flag string, agentID int64, v bool) error {
	val := "0"
	if v {
		val = "1"
	}
	return s.store.PutSetting(ctx, flagSetting(flag, agentID), val)
}

// RestorePresence puts every active agent's stored /on and away flags
// into presence. A node calls it once as it starts, before it takes any
// traffic, and drains afterwards: nothing is routed meanwhile, so that the
// backlog is shared by the routing strategy, not handed to whichever agent
// came back first, and an agent both on and away is never routed to.
func (s *Service) RestorePresence(ctx context.Context) error {
	agents, err := s.store.Agents(ctx)
	if err != nil {
		return err
	}
	var on, away []int64
	for _, a := range agents {
		if !a.Active {
			continue
		}
		for _, flag := range []string{flagOn, flagAway} {
			v, err := s.store.Setting(ctx, flagSetting(flag, a.ID))
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case v != "1":
			case flag == flagOn:
				on = append(on, a.ID)
			default:
				away = append(away, a.ID)
			}
		}
	}
	s.restoring.Store(true)
	defer s.restoring.Store(false)
	for _, id := range away {
		s.presence.SetAway(id, true)
	}
	for _, id := range on {
		s.presence.SetOn(id, true)
	}
	return nil
}

// Deactivate disables an agent; their open conversations go back to the
// queue and are routed to others.
func (s *Service) Deactivate(ctx context.Context, by, agentID int64) error {
	if _, err := s.store.Agent(ctx, agentID); err != nil {
		return err
	}
	wasOn, err := s.store.Setting(ctx, flagSetting(flagOn, agentID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	// Off first: a deactivation that fails after it leaves nothing that a
	// reactivation and a restart would turn back on.
	if err := s.saveFlag(ctx, flagOn, agentID, false); err != nil {
		return err
	}
	_, _, err = s.changeAgent(ctx, agentID, func(cur Agent) (Agent, error) {
		cur.Active = false
		return cur, nil
	})
	if err != nil {
		if errors.Is(err, ErrConflict) && wasOn == "1" {
			// Refused (the last active admin, after another node's change):
			// the agent stays active, and stays on.
			err = errors.Join(err, s.saveFlag(ctx, flagOn, agentID, true))
		}
		return err
	}
	s.presence.SetOn(agentID, false)
	for {
		open, err := s.store.Conversations(ctx, ConversationFilter{AssigneeID: agentID, Statuses: []ConversationStatus{StatusOpen}, Limit: 500})
		if err != nil {
			return err
		}
		for _, c := range open {
			// Back to the queue in its place: its customer came before
			// those who wait now.
			a := s.assignment(c.ID, 0, agentID, 0, EventUnassigned, by, s.now())
			a.KeepPlace = true
			ch, err := s.store.Assign(ctx, a)
			if errors.Is(err, ErrConflict) {
				continue
			}
			if err != nil {
				return err
			}
			s.notify.Publish(ctx, Update{Type: UpdateMessage, Conversation: &ch.Conversation, Message: &ch.Event})
		}
		if len(open) < 500 {
			break
		}
	}
	s.capacityChanged(ctx)
	return nil
}

// AgentSeed is an agent from the config's agents list.
type AgentSeed struct {
	Email, Name, Password, WeComUserID, SlackUser string
	Role                                          Role
}

// EnsureAgents creates the configured agents that do not exist yet. Existing
// agents are left alone: the API owns them after the first start, and a
// wecom_userid or slack_user the config gives one of them is logged as not
// applied. A link another agent already has is left off the new agent, and
// logged.
func (s *Service) EnsureAgents(ctx context.Context, seeds []AgentSeed) (created []Agent, err error) {
	s.accountsMu.Lock()
	defer s.accountsMu.Unlock()
	for _, sd := range seeds {
		if cur, err := s.store.AgentByEmail(ctx, sd.Email); err == nil {
			if sd.WeComUserID != "" && !strings.EqualFold(sd.WeComUserID, cur.WeComUserID) ||
				sd.SlackUser != "" && sd.SlackUser != cur.SlackUser {
				s.log.Warn("agents: the agent exists, so the config's wecom_userid and slack_user for it are not applied: "+
					"link it in the console (Agents) or with PATCH /api/v1/agents/{id}",
					"email", sd.Email, "id", cur.ID, "wecom_userid", cur.WeComUserID, "slack_user", cur.SlackUser)
			}
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return created, err
		}
		// A link another agent has is left off.
		drop := func(key string, v *string, ch AgentChange) error {
			err := s.checkLinksFree(ctx, 0, ch)
			if errors.Is(err, ErrConflict) {
				s.log.Warn("agents: "+key+" not applied to a new agent", "email", sd.Email, "err", err)
				*v, err = "", nil
			}
			return err
		}
		hash, err := HashPassword(sd.Password)
		if err != nil {
			return created, err
		}
		role := sd.Role
		if role == "" {
			role = RoleAgent
		}
		if sd.Name = strings.TrimSpace(sd.Name); sd.Name == "" {
			// Without a name, customers and colleagues would see none.
			sd.Name, _, _ = strings.Cut(sd.Email, "@")
		}
		// A conflict on the write is another node's doing: it created the
		// agent, or gave one of the links to another agent since the check
		// (then the link is left off, and the agent created without it).
		for try := 0; ; try++ {
			if err := drop("wecom_userid", &sd.WeComUserID, AgentChange{WeComUserID: &sd.WeComUserID}); err != nil {
				return created, err
			}
			if err := drop("slack_user", &sd.SlackUser, AgentChange{SlackUser: &sd.SlackUser}); err != nil {
				return created, err
			}
			a, err := s.store.CreateAgent(ctx, Agent{
				Email: strings.ToLower(sd.Email), Name: sd.Name, Role: role, PasswordHash: hash, Active: true,
				WeComUserID: sd.WeComUserID, SlackUser: sd.SlackUser, CreatedAt: s.now(),
			})
			if err == nil {
				created = append(created, a)
				break
			}
			if !errors.Is(err, ErrConflict) {
				return created, err
			}
			if _, err := s.store.AgentByEmail(ctx, sd.Email); err == nil {
				break // another node created it
			} else if !errors.Is(err, ErrNotFound) {
				return created, err
			}
			if try == 1 {
				s.log.Warn("agents: not created: its links were taken twice by another node", "email", sd.Email)
				break
			}
		}
	}
	return created, nil
}

func (s *Service) activeAgent(ctx context.Context, id int64) (Agent, error) {
	a, err := s.store.Agent(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return a, noAgent(id)
		}
		return a, err
	}
	if !a.Active {
		return a, fmt.Errorf("%w: agent %d is deactivated", ErrForbidden, id)
	}
	return a, nil
}

// noAgent is the error for an agent id that names nobody: an ErrNotFound
// (there is no such agent to act on or to hand a conversation to) and an
// ErrForbidden (a caller who is nobody may do nothing), without the
// store's wording.
type noAgent int64

func (e noAgent) Error() string { return fmt.Sprintf("there is no agent %d", int64(e)) }

func (e noAgent) Is(target error) bool { return target == ErrNotFound || target == ErrForbidden }

// StorableText returns s as every store keeps it: valid UTF-8 (invalid
// bytes become U+FFFD) without NUL characters, which PostgreSQL's text
// refuses (SQLite would keep them), so that a message is stored, or not,
// the same on every store.
func StorableText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// checkContent rejects a message with nothing in it.
func checkContent(m Message) error {
	switch m.Kind {
	case KindText:
		if strings.TrimSpace(m.Text) == "" {
			return fmt.Errorf("%w: empty text message", ErrInvalid)
		}
	case KindImage, KindFile:
		if m.Media == nil || m.Media.Key == "" {
			return fmt.Errorf("%w: %s message without media", ErrInvalid, m.Kind)
		}
	case KindTemplate:
		if strings.TrimSpace(m.Text) == "" || m.Media != nil {
			return fmt.Errorf("%w: a template message holds the template's name and nothing else", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: unknown message kind %q", ErrInvalid, m.Kind)
	}
	return nil
}
