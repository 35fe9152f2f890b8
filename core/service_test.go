package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
)

// recorder is a core.Notifier that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	updates []core.Update
	outbox  []core.OutboxEntry
}

func (r *recorder) Publish(_ context.Context, ups ...core.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, ups...)
	r.mu.Unlock()
}

func (r *recorder) Deliver(_ context.Context, e core.OutboxEntry) {
	r.mu.Lock()
	r.outbox = append(r.outbox, e)
	r.mu.Unlock()
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t        testing.TB
	svc      *core.Service
	store    core.Store
	presence *core.MemoryPresence
	notes    *recorder
	clock    *clock
	agents   []core.Agent
}

func newFixture(t *testing.T, cfg core.Config, agents int, window time.Duration) *fixture {
	t.Helper()
	return newWrappedFixture(t, cfg, agents, window, func(s core.Store) core.Store { return s })
}

// newWrappedFixture is newFixture with the service's store wrapped by wrap.
func newWrappedFixture(t testing.TB, cfg core.Config, agents int, window time.Duration, wrap func(core.Store) core.Store) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, store: st, presence: core.NewMemoryPresence(), notes: &recorder{},
		clock: &clock{now: time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)}}
	f.svc = core.NewService(cfg, core.Deps{
		Store: wrap(st), Presence: f.presence, Notifier: f.notes, Now: f.clock.Now,
		Delivers: func(ch string) bool { return ch == "ext" },
		Window:   func(ch string) time.Duration { return window },
	})
	for i := range agents {
		a, err := st.CreateAgent(context.Background(), core.Agent{
			Email: fmt.Sprintf("agent%d@example.com", i), Name: fmt.Sprintf("Agent %d", i), Role: core.RoleAgent, Active: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		f.agents = append(f.agents, a)
	}
	return f
}

// say ingests a customer's text on channel "ext".
func (f *fixture) say(from, id, text string) core.Ingested {
	f.t.Helper()
	res, err := f.svc.Ingest(context.Background(), core.Inbound{
		Channel: "ext", ExternalID: from, Name: from,
		Message: core.Message{Kind: core.KindText, Text: text, DedupKey: core.ProviderKey("ext", id)},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *fixture) conv(id int64) core.Conversation {
	f.t.Helper()
	c, err := f.store.Conversation(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) botMessages(convID int64) int { return len(f.botTexts(convID)) }

// botTexts returns the texts of the automatic replies in conversation
// convID, oldest first.
func (f *fixture) botTexts(convID int64) []string {
	f.t.Helper()
	ms, err := f.store.Messages(context.Background(), core.MessageQuery{ConversationID: convID})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.SenderKind == core.SenderBot {
			out = append(out, m.Text)
		}
	}
	return out
}

// run runs the service's Run until the returned stop is called.
func (f *fixture) run() (stop func()) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.svc.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("Run: %v", err)
		}
	}
}

// drainAndRunPast drains, runs Run, and moves the clock on by d while
// Run's passes go on before and after; stop ends Run.
func (f *fixture) drainAndRunPast(d time.Duration) (stop func()) {
	f.t.Helper()
	if err := f.svc.Drain(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	stop = f.run()
	time.Sleep(20 * time.Millisecond)
	f.clock.Advance(d)
	time.Sleep(50 * time.Millisecond)
	return stop
}

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(10 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

func TestQueueDrainsInOrder(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 2, ReopenWithin: time.Hour}, 1, 0)
	var convs []int64
	for i := range 3 {
		f.clock.Advance(time.Second)
		convs = append(convs, f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello").Conversation.ID)
	}
	for _, id := range convs {
		if c := f.conv(id); c.Status != core.StatusPending || c.AssigneeID != 0 {
			t.Fatalf("#%d before anyone is online: %s assignee %d", id, c.Status, c.AssigneeID)
		}
	}
	a := f.agents[0]
	release := f.presence.Connect(a.ID) // drains the queue
	defer release()
	if c := f.conv(convs[0]); c.AssigneeID != a.ID {
		t.Fatalf("oldest conversation not served first: %+v", c)
	}
	if c := f.conv(convs[1]); c.AssigneeID != a.ID {
		t.Fatalf("second conversation not assigned: %+v", c)
	}
	if c := f.conv(convs[2]); c.Status != core.StatusPending {
		t.Fatalf("third conversation assigned beyond capacity: %+v", c)
	}
	if _, err := f.svc.Close(context.Background(), a.ID, convs[0]); err != nil {
		t.Fatal(err)
	}
	if c := f.conv(convs[2]); c.AssigneeID != a.ID || c.Status != core.StatusOpen {
		t.Fatalf("closing did not free capacity for the waiting conversation: %+v", c)
	}
}

// drainSpy is a core.Store that records AssignAll's batches and can hide
// an agent's open conversations from OpenCounts, as a count that moved
// after it was read.
type drainSpy struct {
	core.Store
	mu      sync.Mutex
	batches []int
	hide    int64 // agent whose open count OpenCounts reports as 0
}

func (d *drainSpy) AssignAll(ctx context.Context, as []core.Assignment) ([]core.Changed, error) {
	d.mu.Lock()
	d.batches = append(d.batches, len(as))
	d.mu.Unlock()
	return d.Store.AssignAll(ctx, as)
}

func (d *drainSpy) OpenCounts(ctx context.Context) (map[int64]int, error) {
	n, err := d.Store.OpenCounts(ctx)
	if err == nil && d.hide != 0 {
		delete(n, d.hide)
	}
	return n, err
}

// assignedEvents returns the conversations of the assigned events
// published, in order.
func (r *recorder) assignedEvents() (convs, agents []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.updates {
		if m := u.Message; m != nil && m.Event != nil && m.Event.Type == core.EventAssigned {
			convs, agents = append(convs, m.ConversationID), append(agents, m.Event.AgentID)
		}
	}
	return convs, agents
}

func TestDrainAssignsAPageInOneWrite(t *testing.T) {
	spy := &drainSpy{}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, ReopenWithin: time.Hour}, 2, 0,
		func(s core.Store) core.Store { spy.Store = s; return spy })
	var convs []int64
	for i := range 7 {
		f.clock.Advance(time.Second)
		convs = append(convs, f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello").Conversation.ID)
	}
	a := f.agents[0]
	defer f.presence.Connect(a.ID)() // drains the queue: all seven to a
	if len(spy.batches) != 1 || spy.batches[0] != 7 {
		t.Fatalf("AssignAll batches %v, want one of 7", spy.batches)
	}
	gotConvs, _ := f.notes.assignedEvents()
	if fmt.Sprint(gotConvs) != fmt.Sprint(convs) {
		t.Fatalf("assigned events published for %v, want %v (oldest first)", gotConvs, convs)
	}
	var lastID int64
	for _, id := range convs {
		c := f.conv(id)
		ms, err := f.store.Messages(context.Background(), core.MessageQuery{ConversationID: id})
		if err != nil {
			t.Fatal(err)
		}
		ev := ms[len(ms)-1]
		if c.AssigneeID != a.ID || c.Status != core.StatusOpen || ev.Event == nil || ev.ID <= lastID {
			t.Fatalf("conversation %d = %+v, last message %+v after ID %d", id, c, ev, lastID)
		}
		lastID = ev.ID
	}
}

func TestDrainRoundRobinWithinAPage(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, ReopenWithin: time.Hour}, 2, 0)
	for i := range 4 {
		f.clock.Advance(time.Second)
		f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello")
	}
	f.presence.OnChange(func(int64) {}) // both online before one drain plans the page
	defer f.presence.Connect(f.agents[0].ID)()
	defer f.presence.Connect(f.agents[1].ID)()
	if err := f.svc.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, agents := f.notes.assignedEvents()
	if len(agents) != 4 || agents[0] == agents[1] || agents[0] != agents[2] || agents[1] != agents[3] {
		t.Errorf("round robin over one page assigned to %v, want the two agents in turn", agents)
	}
}

func TestDrainReplansAfterARefusal(t *testing.T) {
	spy := &drainSpy{}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 2, ReopenWithin: time.Hour}, 2, 0,
		func(s core.Store) core.Store { spy.Store = s; return spy })
	a, b := f.agents[0], f.agents[1]
	ctx := context.Background()
	// a takes two conversations itself (a take is not bound by capacity)...
	for i := range 2 {
		id := f.say(fmt.Sprintf("x%d", i), fmt.Sprintf("x%d", i), "hello").Conversation.ID
		if _, err := f.svc.Take(ctx, a.ID, id); err != nil {
			t.Fatal(err)
		}
	}
	var convs []int64
	for i := range 3 {
		f.clock.Advance(time.Second)
		convs = append(convs, f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello").Conversation.ID)
	}
	// ...but the counts the drain reads do not show them, so its plans give
	// a conversations the store refuses.
	spy.hide = a.ID
	defer f.presence.Connect(a.ID)()
	defer f.presence.Connect(b.ID)()
	for i, want := range []int64{b.ID, b.ID, 0} {
		if c := f.conv(convs[i]); c.AssigneeID != want {
			t.Errorf("conversation %d (#%d oldest): assignee %d, want %d (%+v)", convs[i], i, c.AssigneeID, want, c)
		}
	}
	if c := f.conv(convs[2]); c.Status != core.StatusPending {
		t.Errorf("newest conversation %+v, want still waiting: b is full", c)
	}
	n, err := f.store.OpenCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n[a.ID] != 2 || n[b.ID] != 2 {
		t.Errorf("open counts %v, want 2 each", n)
	}
	if got, _ := f.notes.assignedEvents(); fmt.Sprint(got[2:]) != fmt.Sprint(convs[:2]) {
		t.Errorf("assigned events for %v, want the takes then %v", got, convs[:2])
	}
}

// writerCancels is a context that is cancelled the moment the SQLite
// writer checks it before running the write: a caller going away while its
// write is being applied.
type writerCancels struct {
	context.Context
	cancel context.CancelFunc
}

func (c writerCancels) Err() error {
	err := c.Context.Err()
	buf := make([]byte, 8192)
	if bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("sqlite.(*Store).commit")) {
		c.cancel()
	}
	return err
}

func TestDrainPublishesWhatItCommitsWhenCancelled(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, ReopenWithin: time.Hour}, 1, 0)
	var convs []int64
	for i := range 5 {
		f.clock.Advance(time.Second)
		convs = append(convs, f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello").Conversation.ID)
	}
	f.presence.OnChange(func(int64) {}) // online without a drain: the test drains
	defer f.presence.Connect(f.agents[0].ID)()
	ctx, cancel := context.WithCancel(context.Background())
	err := f.svc.Drain(writerCancels{ctx, cancel})
	assigned := 0
	for _, id := range convs {
		if f.conv(id).AssigneeID == f.agents[0].ID {
			assigned++
		}
	}
	published, _ := f.notes.assignedEvents()
	if assigned == 0 || assigned != len(published) {
		t.Errorf("drain (%v): %d conversations assigned in the store, %d assigned events published", err, assigned, len(published))
	}
}

func TestDrainBalancesAPageLeastBusy(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, ReopenWithin: time.Hour}, 2, 0)
	a, b := f.agents[0], f.agents[1]
	ctx := context.Background()
	id := f.say("x", "x", "hello").Conversation.ID
	if _, err := f.svc.Take(ctx, a.ID, id); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		f.clock.Advance(time.Second)
		f.say(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i), "hello")
	}
	f.presence.OnChange(func(int64) {}) // both online before one drain plans the page
	defer f.presence.Connect(a.ID)()
	defer f.presence.Connect(b.ID)()
	if err := f.svc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := f.store.OpenCounts(ctx); err != nil || n[a.ID] != 3 || n[b.ID] != 2 {
		t.Errorf("open counts %v (%v), want a 3 (1 taken + 2), b 2", n, err)
	}
}

// TestBurstOfNewConversationsAllRouted: many visitors write at once, so
// that drains overlap and most ingests leave routing to the drain waiting
// (drainFor); once every ingest has returned, every conversation is
// assigned and its assignment published.
func TestBurstOfNewConversationsAllRouted(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 30, ReopenWithin: time.Hour}, 2, 0)
	for _, a := range f.agents {
		defer f.presence.Connect(a.ID)()
	}
	const n = 50
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := f.svc.Ingest(context.Background(), core.Inbound{Channel: "ext", ExternalID: fmt.Sprintf("v%d", i),
				Message: core.Message{Kind: core.KindText, Text: "hello"}})
			ids[i], errs[i] = res.Conversation.ID, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if c := f.conv(id); c.Status != core.StatusOpen || c.AssigneeID == 0 {
			t.Errorf("conversation %d after the burst: %s, assignee %d", id, c.Status, c.AssigneeID)
		}
	}
	if got, _ := f.notes.assignedEvents(); len(got) != n {
		t.Errorf("%d assigned events published for %d conversations", len(got), n)
	}
	counts, err := f.store.OpenCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts[f.agents[0].ID]+counts[f.agents[1].ID] != n || counts[f.agents[0].ID] > 30 || counts[f.agents[1].ID] > 30 {
		t.Errorf("open counts %v for %d conversations, at most 30 each", counts, n)
	}
}

func TestOfflineReplyOncePerConversation(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 1, ReopenWithin: time.Hour, OfflineReply: "away"}, 2, 0)
	c1 := f.say("alice", "1", "hi").Conversation.ID
	f.say("alice", "2", "anyone?")
	f.say("alice", "3", "hello??")
	if n := f.botMessages(c1); n != 1 {
		t.Fatalf("%d offline replies, want 1", n)
	}
	if len(f.notes.outbox) != 1 {
		t.Fatalf("%d outbox kicks, want 1 (the offline reply)", len(f.notes.outbox))
	}
	// Someone online but full: the customer waits without an offline reply.
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	if c := f.conv(c1); c.AssigneeID != a.ID {
		t.Fatalf("not assigned when the agent came online: %+v", c)
	}
	c2 := f.say("bob", "4", "hi").Conversation.ID
	if c := f.conv(c2); c.Status != core.StatusPending {
		t.Fatalf("bob's conversation should wait, agent is full: %+v", c)
	}
	if n := f.botMessages(c2); n != 0 {
		t.Fatalf("offline reply sent although an agent is online: %d", n)
	}
}

// A customer who waits while agents are online but all at capacity is told
// so once, with their place in the queue; with nobody online, the offline
// reply instead.
func TestBusyReplyOnceWithThePlaceInTheQueue(t *testing.T) {
	var counted *positionCounter
	f := newWrappedFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 1, ReopenWithin: time.Hour,
		OfflineReply: "away ({number})", BusyReply: "All busy: you are number {position} ({number})."}, 1, 0,
		func(s core.Store) core.Store { counted = &positionCounter{Store: s}; return counted })
	a := f.agents[0]
	leave := f.presence.Connect(a.ID)
	c1 := f.say("alice", "1", "hi").Conversation.ID
	c2 := f.say("bob", "2", "hi").Conversation.ID
	c3 := f.say("carol", "3", "hi").Conversation.ID
	f.say("bob", "4", "still there?")
	if n := counted.n.Load(); n != 2 {
		t.Errorf("%d queue positions read, want 2: bob writing again, told already, needs none", n)
	}
	for _, tc := range []struct {
		conv int64
		want []string
	}{
		{c1, nil}, // with the agent
		{c2, []string{fmt.Sprintf("All busy: you are number 1 (#%d).", c2)}},
		{c3, []string{fmt.Sprintf("All busy: you are number 2 (#%d).", c3)}},
	} {
		if got := f.botTexts(tc.conv); !slices.Equal(got, tc.want) {
			t.Errorf("conversation %d: automatic replies %q, want %q", tc.conv, got, tc.want)
		}
	}
	// Room again: bob is served; dave waits behind carol.
	if _, err := f.svc.Close(context.Background(), a.ID, c1); err != nil {
		t.Fatal(err)
	}
	if c := f.conv(c2); c.AssigneeID != a.ID {
		t.Fatalf("bob not served when the agent had room: %+v", c)
	}
	c4 := f.say("dave", "5", "hi").Conversation.ID
	if got, want := f.botTexts(c4), []string{fmt.Sprintf("All busy: you are number 2 (#%d).", c4)}; !slices.Equal(got, want) {
		t.Errorf("dave: %q, want %q", got, want)
	}
	// Nobody online: the offline reply, not the busy one.
	leave()
	c5 := f.say("erin", "6", "hi").Conversation.ID
	if got, want := f.botTexts(c5), []string{fmt.Sprintf("away (#%d)", c5)}; !slices.Equal(got, want) {
		t.Errorf("erin, with nobody online: %q, want %q", got, want)
	}
}

// An agent's resend of a stored reply (its answer was lost) gets the stored
// message back and changes nothing: the conversation, resolved since, is
// not reopened.
func TestAgentResendChangesNothing(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0)
	ctx := context.Background()
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("alice", "1", "hi").Conversation
	reply := core.Message{Kind: core.KindText, Text: "hello", DedupKey: "agent-1:r-1"}
	first, err := f.svc.Reply(ctx, a.ID, c.ID, reply)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	before := f.conv(c.ID)
	again, err := f.svc.Reply(ctx, a.ID, c.ID, reply)
	if err != nil || again.ID != first.ID {
		t.Fatalf("resend: %+v, %v; want message %d again", again, err, first.ID)
	}
	if after := f.conv(c.ID); after.Status != core.StatusResolved || after.LastSeq != before.LastSeq {
		t.Fatalf("the resend changed the conversation: %+v, before %+v", after, before)
	}
}

// A conversation the customer reopens goes back to its agent, unless they
// were deactivated: then it is routed again, to an agent who is there or to
// the queue with the offline reply.
func TestReopenedConversationLeavesADeactivatedAgent(t *testing.T) {
	ctx := context.Background()
	// Agent a answers "alice" and closes; then after does something, b is
	// connected or not, and alice writes again.
	reopen := func(t *testing.T, maxOpen int, bThere bool, after func(f *fixture, a core.Agent, leaveA func())) (*fixture, core.Conversation) {
		t.Helper()
		f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: maxOpen, ReopenWithin: time.Hour,
			OfflineReply: "away"}, 2, 0)
		a, b := f.agents[0], f.agents[1]
		leaveA := f.presence.Connect(a.ID)
		c := f.say("alice", "1", "hi").Conversation
		if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
			t.Fatal(err)
		}
		after(f, a, leaveA)
		if bThere {
			t.Cleanup(f.presence.Connect(b.ID))
		}
		f.say("alice", "2", "one more question")
		return f, f.conv(c.ID)
	}
	deactivate := func(f *fixture, a core.Agent, leaveA func()) {
		if err := f.svc.Deactivate(ctx, 0, a.ID); err != nil {
			t.Fatal(err)
		}
		leaveA() // their sessions are revoked: the console closes
	}

	t.Run("deactivated, another agent there", func(t *testing.T) {
		f, c := reopen(t, 8, true, deactivate)
		if c.Status != core.StatusOpen || c.AssigneeID != f.agents[1].ID {
			t.Errorf("%+v, want it open with b", c)
		}
	})
	t.Run("deactivated, nobody there", func(t *testing.T) {
		f, c := reopen(t, 8, false, deactivate)
		if c.Status != core.StatusPending || c.AssigneeID != 0 || f.botMessages(c.ID) != 1 {
			t.Errorf("%+v, %d automatic replies; want it waiting, with the offline reply", c, f.botMessages(c.ID))
		}
	})
	// Otherwise back with a: offline for now, full, or there.
	for name, after := range map[string]func(*fixture, core.Agent, func()){
		"offline": func(_ *fixture, _ core.Agent, leaveA func()) { leaveA() },
		"full":    func(f *fixture, _ core.Agent, _ func()) { f.say("bob", "3", "hello") },
		"there":   func(*fixture, core.Agent, func()) {},
	} {
		t.Run(name, func(t *testing.T) {
			f, c := reopen(t, 1, true, after)
			if c.Status != core.StatusOpen || c.AssigneeID != f.agents[0].ID {
				t.Errorf("%+v, want it back with a", c)
			}
		})
	}
}

// positionCounter counts the queue positions read.
type positionCounter struct {
	core.Store
	n atomic.Int32
}

func (p *positionCounter) QueuePosition(ctx context.Context, id int64) (int, error) {
	p.n.Add(1)
	return p.Store.QueuePosition(ctx, id)
}

func TestReopenWithinWindowElseNew(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 8, ReopenWithin: 24 * time.Hour}, 1, 0)
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	first := f.say("carol", "1", "hi").Conversation
	if _, err := f.svc.Close(context.Background(), a.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(23 * time.Hour)
	res := f.say("carol", "2", "one more question")
	if res.Conversation.ID != first.ID || !res.Reopened || res.Conversation.Status != core.StatusOpen || res.Conversation.AssigneeID != a.ID {
		t.Fatalf("within reopen_within: %+v, want #%d reopened for its agent", res.Conversation, first.ID)
	}
	if _, err := f.svc.Close(context.Background(), a.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(25 * time.Hour)
	res = f.say("carol", "3", "new topic")
	if res.Conversation.ID == first.ID || !res.NewConversation {
		t.Fatalf("after reopen_within: landed in #%d, want a new conversation", res.Conversation.ID)
	}
	// Closing twice is a conflict, not a second event.
	if _, err := f.svc.Close(context.Background(), a.ID, first.ID); !errors.Is(err, core.ErrConflict) {
		t.Fatalf("closing a resolved conversation: %v, want ErrConflict", err)
	}
}

func TestTakeIsAtomic(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 20, 0)
	c := f.say("dave", "1", "hi").Conversation
	var wins atomic.Int32
	var winner atomic.Int64
	var wg sync.WaitGroup
	for _, a := range f.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.svc.Take(context.Background(), a.ID, c.ID)
			switch {
			case err == nil:
				wins.Add(1)
				winner.Store(a.ID)
			case !errors.Is(err, core.ErrConflict):
				t.Errorf("agent %d: %v", a.ID, err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d agents took the conversation, want exactly 1", wins.Load())
	}
	if got := f.conv(c.ID); got.AssigneeID != winner.Load() {
		t.Fatalf("assignee %d, winner %d", got.AssigneeID, winner.Load())
	}
	// The winner's take sent again (its answer was lost) answers the
	// conversation, changing nothing; a resolved one is still refused.
	seq := f.conv(c.ID).LastSeq
	if again, err := f.svc.Take(context.Background(), winner.Load(), c.ID); err != nil || again.AssigneeID != winner.Load() || f.conv(c.ID).LastSeq != seq {
		t.Errorf("the winner's take again: %+v, %v (last seq %d, was %d)", again, err, f.conv(c.ID).LastSeq, seq)
	}
	if _, err := f.svc.Close(context.Background(), winner.Load(), c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Take(context.Background(), winner.Load(), c.ID); !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "is resolved: reopen it first") {
		t.Errorf("taking one's own resolved conversation: %v, want a conflict saying it is resolved", err)
	}
	if _, err := f.svc.Transfer(context.Background(), winner.Load(), c.ID, 0); !errors.Is(err, core.ErrConflict) || strings.Contains(err.Error(), "sqlite") {
		t.Errorf("transferring a resolved conversation: %v, want a conflict in kefu's words", err)
	}
}

func TestRoutingSpreadsLoad(t *testing.T) {
	for _, strategy := range []core.Strategy{core.LeastBusy, core.RoundRobin} {
		t.Run(string(strategy), func(t *testing.T) {
			f := newFixture(t, core.Config{Strategy: strategy, MaxOpenPerAgent: 2, ReopenWithin: time.Hour}, 3, 0)
			for _, a := range f.agents {
				defer f.presence.Connect(a.ID)()
			}
			for i := range 7 {
				f.say(fmt.Sprintf("c%d", i), fmt.Sprint(i), "hi")
			}
			counts, err := f.store.OpenCounts(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range f.agents {
				if counts[a.ID] != 2 {
					t.Fatalf("open counts %v, want 2 each (capacity 2, 7 conversations)", counts)
				}
			}
			q, _ := f.store.Queue(context.Background(), 10)
			if len(q) != 1 {
				t.Fatalf("%d waiting, want 1", len(q))
			}
		})
	}
}

func TestReplyWindow(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 24*time.Hour)
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("erin", "1", "hi").Conversation
	f.clock.Advance(23 * time.Hour)
	if _, err := f.svc.Reply(context.Background(), a.ID, c.ID, core.Message{Kind: core.KindText, Text: "in time"}); err != nil {
		t.Fatalf("inside the window: %v", err)
	}
	f.clock.Advance(2 * time.Hour)
	_, err := f.svc.Reply(context.Background(), a.ID, c.ID, core.Message{Kind: core.KindText, Text: "too late"})
	if !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("outside the window: %v, want ErrWindowClosed", err)
	}
	// Notes are internal: no window.
	if _, err := f.svc.Note(context.Background(), a.ID, c.ID, core.Message{Kind: core.KindText, Text: "call them"}); err != nil {
		t.Fatalf("note outside the window: %v", err)
	}
	// The customer writes again: the window opens.
	f.say("erin", "2", "hello again")
	if _, err := f.svc.Reply(context.Background(), a.ID, c.ID, core.Message{Kind: core.KindText, Text: "welcome back"}); err != nil {
		t.Fatalf("after the customer wrote again: %v", err)
	}
}

func TestTransferRules(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 3, 0)
	owner, other, target := f.agents[0], f.agents[1], f.agents[2]
	c := f.say("fay", "1", "hi").Conversation
	if _, err := f.svc.Take(context.Background(), owner.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Transfer(context.Background(), other.ID, c.ID, target.ID); !errors.Is(err, core.ErrForbidden) {
		t.Fatalf("transfer by a non-assignee: %v, want ErrForbidden", err)
	}
	got, err := f.svc.Transfer(context.Background(), owner.ID, c.ID, target.ID)
	if err != nil || got.AssigneeID != target.ID {
		t.Fatalf("transfer: %+v %v", got, err)
	}
	// Back to the queue: nobody is online, so it waits.
	got, err = f.svc.Transfer(context.Background(), target.ID, c.ID, 0)
	if err != nil || got.Status != core.StatusPending || got.AssigneeID != 0 {
		t.Fatalf("transfer to the queue: %+v %v", got, err)
	}
}

func TestIngestRejectsEmptyContent(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8}, 0, 0)
	for _, m := range []core.Message{{Kind: core.KindText, Text: "  "}, {Kind: core.KindImage}, {Kind: "poll"}} {
		_, err := f.svc.Ingest(context.Background(), core.Inbound{Channel: "ext", ExternalID: "x", Message: m})
		if !errors.Is(err, core.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", m, err)
		}
	}
	if cs, _ := f.store.Conversations(context.Background(), core.ConversationFilter{}); len(cs) != 0 {
		t.Fatalf("bad input stored %d conversations", len(cs))
	}
}

// TestTextStorableEverywhere: NUL characters and invalid UTF-8, which
// PostgreSQL's text refuses, are taken out of messages and names before
// any store sees them; a text of nothing else is empty, so refused.
func TestTextStorableEverywhere(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8}, 1, 0)
	ctx := context.Background()
	res, err := f.svc.Ingest(ctx, core.Inbound{Channel: "ext", ExternalID: "x", Name: "Zh\x00ang",
		Message: core.Message{Kind: core.KindText, Text: "a\x00b\xffc"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Message.Text != "ab\uFFFDc" || res.Contact.Name != "Zhang" {
		t.Errorf("stored %q from %q, want %q from %q", res.Message.Text, res.Contact.Name, "ab\uFFFDc", "Zhang")
	}
	if _, err := f.svc.Ingest(ctx, core.Inbound{Channel: "ext", ExternalID: "x",
		Message: core.Message{Kind: core.KindText, Text: "\x00\x00"}}); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("a text of NULs: %v, want ErrInvalid", err)
	}
	conv := res.Conversation
	m, err := f.svc.Reply(ctx, f.agents[0].ID, conv.ID, core.Message{Kind: core.KindText, Text: "ok\x00"})
	if err != nil || m.Text != "ok" {
		t.Errorf("reply stored %q (%v), want \"ok\"", m.Text, err)
	}
	b, err := f.svc.BotMessage(ctx, conv.ID, core.Message{Kind: core.KindText, Text: "\x00hi"})
	if err != nil || b.Text != "hi" {
		t.Errorf("bot message stored %q (%v), want \"hi\"", b.Text, err)
	}
}

// BenchmarkDrainPage is an agent coming online to 100 waiting
// conversations: the drain that assigns them all.
func BenchmarkDrainPage(b *testing.B) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f := newWrappedFixture(b, core.Config{Strategy: core.RoundRobin, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { return s })
	ctx := context.Background()
	n := 0
	for b.Loop() {
		b.StopTimer()
		for range 100 {
			n++
			if _, err := f.svc.Ingest(ctx, core.Inbound{Channel: "ext", ExternalID: fmt.Sprint("v", n), Name: "v",
				Message: core.Message{Kind: core.KindText, Text: "hello"}}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		release := f.presence.Connect(f.agents[0].ID)
		b.StopTimer()
		release()
		if q, err := f.store.Queue(ctx, 1); err != nil || len(q) != 0 {
			b.Fatalf("queue after the drain: %v, %v", q, err)
		}
		b.StartTimer()
	}
}

// queueGate wraps a store: once armed, the 1st Queue call reads the queue
// and then blocks until release is closed; the 2nd Queue call fails if
// failSecond; later calls pass through.
type queueGate struct {
	core.Store
	armed      atomic.Bool
	calls      atomic.Int32
	entered    chan struct{}
	release    chan struct{}
	failSecond bool
}

func (g *queueGate) Queue(ctx context.Context, n int) ([]core.Conversation, error) {
	if !g.armed.Load() {
		return g.Store.Queue(ctx, n)
	}
	switch g.calls.Add(1) {
	case 1:
		q, err := g.Store.Queue(ctx, n)
		close(g.entered)
		<-g.release
		return q, err
	case 2:
		if g.failSecond {
			return nil, errors.New("transient: connection reset")
		}
	}
	return g.Store.Queue(ctx, n)
}

func ingestAsync(f *fixture, who string, wg *sync.WaitGroup) (*int64, chan struct{}) {
	id := new(int64)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		res, err := f.svc.Ingest(context.Background(), core.Inbound{Channel: "ext", ExternalID: who,
			Message: core.Message{Kind: core.KindText, Text: "hello"}})
		if err != nil {
			f.t.Error(err)
		}
		atomic.StoreInt64(id, res.Conversation.ID)
	}()
	return id, done
}

// A transient failure of the waiting drain must not leave the conversations
// of the ingests that returned early pending while an agent has room. The
// sleeps only order the ingests: v1 runs a drain, v2 waits for it, v3
// leaves its conversation to v2.
func TestFailedWaitingDrainStrandsNobody(t *testing.T) {
	g := &queueGate{entered: make(chan struct{}), release: make(chan struct{}), failSecond: true}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 10, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { g.Store = s; return g })
	defer f.presence.Connect(f.agents[0].ID)()
	g.armed.Store(true)

	var wg sync.WaitGroup
	id1, _ := ingestAsync(f, "v1", &wg) // R: reads the queue, then holds drainMu
	<-g.entered
	id2, _ := ingestAsync(f, "v2", &wg) // D: waits for drainMu
	time.Sleep(100 * time.Millisecond)
	id3, _ := ingestAsync(f, "v3", &wg) // HEAD: returns at once, leaving v3 to D
	time.Sleep(100 * time.Millisecond)
	close(g.release)
	wg.Wait()

	for _, id := range []int64{*id1, *id2, *id3} {
		if c := f.conv(id); c.Status != core.StatusOpen {
			t.Errorf("after every Ingest returned, conversation %d is %s while agent %d is online with room", c.ID, c.Status, f.agents[0].ID)
		}
	}
}

// An ingest that leaves its conversation to the waiting drain must not
// decide on the offline reply before that drain has run: the last agent may
// leave meanwhile, and the conversation then waits with nobody available.
func TestOfflineReplyWhenTheAgentLeavesBeforeTheWaitingDrain(t *testing.T) {
	g := &queueGate{entered: make(chan struct{}), release: make(chan struct{})}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 10, ReopenWithin: time.Hour, OfflineReply: "away"}, 1, 0,
		func(s core.Store) core.Store { g.Store = s; return g })
	disconnect := f.presence.Connect(f.agents[0].ID)
	g.armed.Store(true)

	var wg sync.WaitGroup
	ingestAsync(f, "v1", &wg)
	<-g.entered
	ingestAsync(f, "v2", &wg)
	time.Sleep(100 * time.Millisecond)
	id3, done3 := ingestAsync(f, "v3", &wg)
	select {
	case <-done3:
	case <-time.After(300 * time.Millisecond): // before the commit: blocked on drainMu
	}
	disconnect() // the last agent leaves before the waiting drain runs
	close(g.release)
	wg.Wait()

	// The waiting drain sends the replies of the conversations left to it
	// off its caller's path: they may follow the ingests' answers.
	wait.For(t, "conversation 3 served, or its offline reply", func() bool {
		c := f.conv(*id3)
		if c.Status != core.StatusPending {
			return true
		}
		ms, err := f.store.Messages(context.Background(), core.MessageQuery{ConversationID: c.ID})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.SenderKind == core.SenderBot && m.Text == "away" {
				return true
			}
		}
		return false
	})
}

// In a cluster, capacity freed on one node drains the queue there; another
// node that last found the queue full must not keep its new conversations
// waiting while an agent has room.
func TestCapacityFreedOnAnotherNodeReachesNewConversations(t *testing.T) {
	cfg := core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 1, ReopenWithin: time.Hour, Redrain: 10 * time.Millisecond}
	f := newFixture(t, cfg, 1, 0) // node A: f.svc
	// The nodes share the presence, as a cluster's nodes share what they
	// know of it (MemoryPresence keeps one OnChange callback: node B's; the
	// agent connects before any conversation, so node A has nothing to drain).
	nodeB := core.NewService(cfg, core.Deps{Store: f.store, Presence: f.presence, Notifier: &recorder{}, Now: f.clock.Now})
	agent := f.agents[0].ID
	defer f.presence.Connect(agent)()
	ctx := context.Background()

	x := f.say("x", "1", "hello").Conversation.ID
	y := f.say("y", "2", "hello").Conversation.ID // no room: A finds the queue full
	if c := f.conv(y); c.Status != core.StatusPending {
		t.Fatalf("y is %s, want pending while the agent is at capacity", c.Status)
	}
	if _, err := nodeB.Close(ctx, agent, x); err != nil { // B drains: y to the agent
		t.Fatal(err)
	}
	if c := f.conv(y); c.AssigneeID != agent {
		t.Fatalf("after x closed on B, y is %s with assignee %d, want the agent", c.Status, c.AssigneeID)
	}
	if _, err := nodeB.Close(ctx, agent, y); err != nil { // the agent has room, the queue is empty
		t.Fatal(err)
	}

	z := f.say("z", "3", "hello").Conversation.ID // on A
	if c := f.conv(z); c.Status != core.StatusPending {
		t.Fatalf("z is %s before Run: node A drained on its own, so this test no longer exercises Run", c.Status)
	}
	defer f.run()()
	waitFor(func() bool { return f.conv(z).Status != core.StatusPending })
	if c := f.conv(z); c.AssigneeID != agent {
		t.Errorf("z is %s with assignee %d, want the agent, who has had room since y closed on node B", c.Status, c.AssigneeID)
	}
}

// queueDown wraps a store whose queue cannot be read while down is set.
type queueDown struct {
	core.Store
	down atomic.Bool
}

func (q *queueDown) Queue(ctx context.Context, n int) ([]core.Conversation, error) {
	if q.down.Load() {
		return nil, errors.New("store unreachable")
	}
	return q.Store.Queue(ctx, n)
}

// A conversation whose drains all failed (the store down for longer than
// drainFor's retries) is routed once the store is back, without waiting for
// another conversation or a change of capacity.
func TestRunDrainsAgainAfterAFailedDrain(t *testing.T) {
	q := &queueDown{}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 5, ReopenWithin: time.Hour, Redrain: 10 * time.Millisecond}, 1, 0,
		func(s core.Store) core.Store { q.Store = s; return q })
	defer f.presence.Connect(f.agents[0].ID)()
	q.down.Store(true)
	id := f.say("v", "1", "hello").Conversation.ID
	if c := f.conv(id); c.Status != core.StatusPending {
		t.Fatalf("with the queue unreadable the conversation is %s, want pending", c.Status)
	}
	q.down.Store(false)

	defer f.run()()
	waitFor(func() bool { return f.conv(id).Status != core.StatusPending })
	if c := f.conv(id); c.AssigneeID != f.agents[0].ID {
		t.Errorf("conversation is %s with assignee %d, want the online agent once the store is back", c.Status, c.AssigneeID)
	}
}

// queueReads counts the reads of the queue.
type queueReads struct {
	core.Store
	n atomic.Int32
}

func (q *queueReads) Queue(ctx context.Context, n int) ([]core.Conversation, error) {
	q.n.Add(1)
	return q.Store.Queue(ctx, n)
}

// Run reads nothing while the last drain left nobody waiting: every node
// runs it, all the time.
func TestRunIdleWhenNothingWaits(t *testing.T) {
	q := &queueReads{}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 5, ReopenWithin: time.Hour, Redrain: time.Millisecond}, 1, 0,
		func(s core.Store) core.Store { q.Store = s; return q })
	defer f.presence.Connect(f.agents[0].ID)()
	f.say("v", "1", "hello") // routed at once: the queue is empty again
	before := q.n.Load()

	stop := f.run()
	time.Sleep(100 * time.Millisecond)
	stop()
	if n := q.n.Load() - before; n != 0 {
		t.Errorf("Run read the queue %d times in 100 ms with nothing waiting, want 0", n)
	}
}

// Conversations that were waiting for an agent with room when the last agent
// left get the offline reply once nobody has been available for
// OfflineAfter; not before (a connection dropping for a moment), and not
// those already with an agent.
func TestOfflineReplyToTheQueueWhenEveryoneLeaves(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 1, ReopenWithin: time.Hour,
		OfflineReply: "away", Redrain: 5 * time.Millisecond, OfflineAfter: time.Minute}, 1, 0)
	leave := f.presence.Connect(f.agents[0].ID)
	x := f.say("x", "1", "hello").Conversation.ID
	y := f.say("y", "2", "hello").Conversation.ID // waits: the agent is at capacity
	if n := f.botMessages(y); n != 0 {
		t.Fatalf("y got %d offline replies while an agent was online", n)
	}
	// The last agent goes; a drain finds nobody, at the clock's now.
	leave()
	if err := f.svc.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}

	defer f.run()()
	time.Sleep(50 * time.Millisecond) // passes of Run, none an OfflineAfter later
	if n := f.botMessages(y); n != 0 {
		t.Fatalf("y got %d offline replies before nobody had been available for OfflineAfter", n)
	}
	f.clock.Advance(time.Minute)
	waitFor(func() bool { return f.botMessages(y) > 0 })
	time.Sleep(50 * time.Millisecond) // more passes: still one reply
	if n := f.botMessages(y); n != 1 {
		t.Errorf("waiting conversation y got %d offline replies, want 1", n)
	}
	if n := f.botMessages(x); n != 0 {
		t.Errorf("conversation x, with its agent, got %d offline replies, want 0", n)
	}
}

// The offline pass reaches every waiting conversation, not only the first
// page of the queue.
func TestOfflineReplyToTheWholeQueue(t *testing.T) {
	defer core.SetOfflinePage(2)()
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 1, ReopenWithin: time.Hour,
		OfflineReply: "away", Redrain: 5 * time.Millisecond, OfflineAfter: time.Minute}, 1, 0)
	leave := f.presence.Connect(f.agents[0].ID)
	x := f.say("x", "1", "hello").Conversation.ID
	var waiting []int64
	for i := range 5 { // 5 waiting: three pages of 2
		waiting = append(waiting, f.say(fmt.Sprint("w", i), fmt.Sprint("m", i), "hello").Conversation.ID)
	}
	leave()
	if err := f.svc.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.run()()
	f.clock.Advance(time.Minute)
	all := func() bool {
		for _, id := range waiting {
			if f.botMessages(id) == 0 {
				return false
			}
		}
		return true
	}
	waitFor(all)
	time.Sleep(50 * time.Millisecond) // more passes: still one reply each
	for _, id := range waiting {
		if n := f.botMessages(id); n != 1 {
			t.Errorf("waiting conversation %d got %d offline replies, want 1", id, n)
		}
	}
	if n := f.botMessages(x); n != 0 {
		t.Errorf("conversation x, with its agent, got %d offline replies, want 0", n)
	}
}

// A node that starts while its agents have yet to reconnect has not seen
// everyone leave: the conversations waiting in the store get no offline
// reply however long the agents take.
func TestNoOfflineReplyToTheQueueAfterARestart(t *testing.T) {
	cfg := core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 1, ReopenWithin: time.Hour,
		OfflineReply: "away", Redrain: 5 * time.Millisecond, OfflineAfter: time.Minute}
	f := newFixture(t, cfg, 1, 0)
	leave := f.presence.Connect(f.agents[0].ID)
	f.say("x", "1", "hello")
	y := f.say("y", "2", "hello").Conversation.ID // waits: the agent is at capacity
	leave()

	// The restarted node: same store, nobody connected yet.
	f.presence = core.NewMemoryPresence()
	f.svc = core.NewService(cfg, core.Deps{Store: f.store, Presence: f.presence, Notifier: f.notes, Now: f.clock.Now})
	defer f.drainAndRunPast(time.Hour)()
	if n := f.botMessages(y); n != 0 {
		t.Errorf("after a restart with no agent back yet, y got %d offline replies, want 0", n)
	}
}

// A waiting conversation whose provider's reply window has closed gets no
// offline reply: the provider would refuse it.
func TestNoOfflineReplyToTheQueueOutsideTheWindow(t *testing.T) {
	f := newFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 1, ReopenWithin: time.Hour,
		OfflineReply: "away", Redrain: 5 * time.Millisecond, OfflineAfter: time.Minute}, 1, 24*time.Hour)
	leave := f.presence.Connect(f.agents[0].ID)
	f.say("x", "1", "hello")
	y := f.say("y", "2", "hello").Conversation.ID // waits: the agent is at capacity
	f.clock.Advance(25 * time.Hour)               // its 24 h window closes
	leave()
	defer f.drainAndRunPast(time.Minute)()
	if n := f.botMessages(y); n != 0 {
		t.Errorf("y, whose reply window closed, got %d offline replies, want 0", n)
	}
	f.notes.mu.Lock()
	defer f.notes.mu.Unlock()
	if len(f.notes.outbox) != 0 {
		t.Errorf("%d outbox entries for the provider, want none", len(f.notes.outbox))
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Count(s.b.Bytes(), []byte(sub))
}

// While the store keeps failing, Run logs the first failure and the
// recovery, not one warning per attempt.
func TestRunLogsAFailingStoreOnce(t *testing.T) {
	q := &queueDown{}
	f := newWrappedFixture(t, core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 5, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { q.Store = s; return q })
	logs := &syncBuffer{}
	f.svc = core.NewService(core.Config{Strategy: core.RoundRobin, MaxOpenPerAgent: 5, ReopenWithin: time.Hour, Redrain: time.Millisecond},
		core.Deps{Store: q, Presence: f.presence, Notifier: f.notes, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer f.presence.Connect(f.agents[0].ID)()
	q.down.Store(true)
	if err := f.svc.Drain(context.Background()); err == nil {
		t.Fatal("Drain with the queue unreadable: no error")
	}
	stop := f.run()
	waitFor(func() bool { return logs.count("drain failed") > 0 })
	time.Sleep(50 * time.Millisecond) // dozens more failed passes
	q.down.Store(false)
	waitFor(func() bool { return logs.count("drain succeeded again") > 0 })
	stop()
	if n := logs.count("drain failed"); n != 1 {
		t.Errorf("%d drain-failed warnings while the store was down, want 1:\n%s", n, logs.b.String())
	}
	if n := logs.count("drain succeeded again"); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
}

// An agent's /on and away outlast a restart: a new Service over the same
// store, with a fresh presence, routes as the agents left it.
func TestOnAndAwaySurviveARestart(t *testing.T) {
	f := newFixture(t, core.Config{}, 3, 0)
	ctx := context.Background()
	on, away, gone := f.agents[0].ID, f.agents[1].ID, f.agents[2].ID
	check(t, f.svc.SetOn(ctx, on, true))
	check(t, f.svc.SetAway(ctx, away, true))
	check(t, f.svc.SetOn(ctx, gone, true))
	check(t, f.svc.Deactivate(ctx, 0, gone))

	restart := func() *core.MemoryPresence {
		p := core.NewMemoryPresence()
		svc := core.NewService(core.Config{}, core.Deps{Store: f.store, Presence: p, Notifier: f.notes, Now: f.clock.Now})
		check(t, svc.RestorePresence(ctx))
		p.Connect(away) // the away agent opens the console again
		return p
	}
	p := restart()
	if ids, _ := p.Available(ctx); !slices.Equal(ids, []int64{on}) {
		t.Fatalf("after a restart available = %v, want only the agent who said /on (%d)", ids, on)
	}

	check(t, f.svc.SetOn(ctx, on, false))
	check(t, f.svc.SetAway(ctx, away, false))
	p = restart()
	if ids, _ := p.Available(ctx); !slices.Equal(ids, []int64{away}) {
		t.Fatalf("after /off, back and a restart, available = %v, want only the console agent (%d)", ids, away)
	}
}

// A store that cannot be read at start is an error, not a presence
// silently forgotten.
func TestRestorePresenceFailsWithTheStore(t *testing.T) {
	f := newWrappedFixture(t, core.Config{}, 1, 0, func(s core.Store) core.Store { return failingSettings{s} })
	if err := f.svc.RestorePresence(context.Background()); err == nil {
		t.Fatal("RestorePresence succeeded with settings unreadable")
	}
}

type failingSettings struct{ core.Store }

func (failingSettings) Setting(context.Context, string) (string, error) {
	return "", errors.New("disk on fire")
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A restart with a backlog: restoring routes nothing by itself; the drain
// after it shares the backlog by the strategy, and an agent both /on and
// away gets none of it.
func TestRestorePresenceRoutesOnlyThroughTheDrainAfter(t *testing.T) {
	cfg := core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8}
	f := newFixture(t, cfg, 3, 0)
	ctx := context.Background()
	a, b, away := f.agents[0].ID, f.agents[1].ID, f.agents[2].ID
	var waiting []int64
	for i := range 4 {
		waiting = append(waiting, f.say(fmt.Sprint("c", i), fmt.Sprint("m", i), "hello").Conversation.ID)
	}
	// The flags, saved through a node whose presence does not drain.
	before := core.NewService(cfg, core.Deps{Store: f.store, Presence: quietPresence{core.NewMemoryPresence()}, Notifier: f.notes, Now: f.clock.Now})
	for _, id := range []int64{a, b, away} {
		check(t, before.SetOn(ctx, id, true))
	}
	check(t, before.SetAway(ctx, away, true))

	svc := core.NewService(cfg, core.Deps{Store: f.store, Presence: core.NewMemoryPresence(), Notifier: f.notes, Now: f.clock.Now})
	check(t, svc.RestorePresence(ctx))
	for _, id := range waiting {
		if c := f.conv(id); c.AssigneeID != 0 {
			t.Fatalf("restoring assigned #%d to %d", id, c.AssigneeID)
		}
	}
	check(t, svc.Drain(ctx))
	got := map[int64]int{}
	for _, id := range waiting {
		got[f.conv(id).AssigneeID]++
	}
	if got[a] != 2 || got[b] != 2 || got[away] != 0 {
		t.Fatalf("after the drain, conversations per agent: %v; want 2 each for %d and %d, none for the away %d", got, a, b, away)
	}
}

// quietPresence is a Presence that does not tell of changes.
type quietPresence struct{ core.Presence }

// An agent's reply to a resolved conversation whose customer has since
// opened a newer one is refused with a clear conflict (it cannot reopen),
// and stores nothing.
func TestReplyToAResolvedConversationWhileANewerIsOpen(t *testing.T) {
	f := newFixture(t, core.Config{ReopenWithin: time.Minute}, 1, 0)
	ctx := context.Background()
	agent := f.agents[0].ID
	old := f.say("cust", "m1", "hello").Conversation.ID
	_, err := f.svc.Close(ctx, agent, old)
	check(t, err)
	f.clock.Advance(time.Hour)
	newer := f.say("cust", "m2", "me again").Conversation.ID
	if newer == old {
		t.Fatal("setup: the second message reopened the first conversation")
	}
	before := f.conv(old).LastSeq
	_, err = f.svc.Reply(ctx, agent, old, core.Message{Kind: core.KindText, Text: "one more thing"})
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "newer conversation") {
		t.Fatalf("reply to the resolved conversation: %v, want a conflict naming the newer conversation", err)
	}
	if c := f.conv(old); c.LastSeq != before || c.Status != core.StatusResolved || f.conv(newer).Status == core.StatusResolved {
		t.Fatalf("after the refused reply: #%d %s last seq %d (was %d), #%d %s", old, c.Status, c.LastSeq, before, newer, f.conv(newer).Status)
	}
}
