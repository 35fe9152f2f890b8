package core_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// declineRaceStore runs a hook in the middle of a decline's write, of the
// read of the declines, or after an assignment: what another caller (or
// node) does at that moment.
type declineRaceStore struct {
	core.Store
	mu         sync.Mutex
	onPut      func()
	onSettings func()
	onAssign   func(core.Assignment)
}

func (s *declineRaceStore) hooks() (func(), func(), func(core.Assignment)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.onPut, s.onSettings, s.onAssign
}

func (s *declineRaceStore) PutSetting(ctx context.Context, k, v string) error {
	if p, _, _ := s.hooks(); p != nil && strings.HasPrefix(k, "routing.declined.") {
		p()
	}
	return s.Store.PutSetting(ctx, k, v)
}

func (s *declineRaceStore) Settings(ctx context.Context, prefix, after string, limit int) ([]core.Setting, error) {
	res, err := s.Store.Settings(ctx, prefix, after, limit)
	if _, h, _ := s.hooks(); h != nil && prefix == "routing.declined." {
		s.mu.Lock()
		s.onSettings = nil
		s.mu.Unlock()
		h()
	}
	return res, err
}

func (s *declineRaceStore) Assign(ctx context.Context, a core.Assignment) (core.Changed, error) {
	ch, err := s.Store.Assign(ctx, a)
	if _, _, h := s.hooks(); h != nil && err == nil {
		h(a)
	}
	return ch, err
}

// One node: a drain that reads the declines while a transfer back to the
// queue is writing its own keeps that decline, and does not give the
// conversation back to its agent.
func TestDeclineWrittenDuringADrainIsKept(t *testing.T) {
	ctx := context.Background()
	var st *declineRaceStore
	f := newWrappedFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0,
		func(s core.Store) core.Store { st = &declineRaceStore{Store: s}; return st })
	a := f.agents[0]
	defer f.presence.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if f.conv(c.ID).AssigneeID != a.ID {
		t.Fatal("setup")
	}
	waiting(t, f) // so that the drain reads the declines
	putEntered, putGo, unassigned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.mu.Lock()
	st.onPut = func() { close(putEntered); <-putGo }
	st.onAssign = func(as core.Assignment) {
		if as.ConversationID == c.ID && as.AgentID == 0 {
			once.Do(func() { close(unassigned) })
		}
	}
	st.mu.Unlock()
	done := make(chan error, 1)
	go func() { _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); done <- err }()
	<-putEntered
	st.mu.Lock()
	st.onPut = nil
	st.onSettings = func() { close(putGo); <-unassigned }
	st.mu.Unlock()
	if err := f.svc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); now.AssigneeID == a.ID {
		t.Fatalf("the conversation a sent back went straight back to a (status %s)", now.Status)
	}
}

// waiting stores a customer's conversation that waits in the queue,
// without routing it (the store's own Ingest): a drain then has someone
// to plan for.
func waiting(t *testing.T, f *fixture) {
	t.Helper()
	if _, err := f.store.Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "waiting",
		Message: core.Message{Kind: core.KindText, Text: "anyone?", CreatedAt: f.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
}

// Two nodes: node 1's transfer back to the queue lands while node 2's
// drain is between its reads: node 2 does not give the conversation back.
func TestDeclineOnAnotherNodeDuringADrain(t *testing.T) {
	ctx := context.Background()
	cfg := core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}
	f := newFixture(t, cfg, 1, 0)
	a := f.agents[0]
	st2 := &declineRaceStore{Store: f.store}
	presence2 := core.NewMemoryPresence()
	node2 := core.NewService(cfg, core.Deps{Store: st2, Presence: presence2, Notifier: f.notes, Now: f.clock.Now})
	defer f.presence.Connect(a.ID)()
	defer presence2.Connect(a.ID)()
	c := f.say("c", "1", "hi").Conversation
	if f.conv(c.ID).AssigneeID != a.ID {
		t.Fatal("setup")
	}
	waiting(t, f) // so that node 2's drain reads the declines
	st2.mu.Lock()
	st2.onSettings = func() {
		if _, err := f.svc.Transfer(ctx, a.ID, c.ID, 0); err != nil {
			t.Error(err)
		}
	}
	st2.mu.Unlock()
	if err := node2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, h, _ := st2.hooks(); h != nil {
		t.Fatal("test set-up: node 2's drain did not read the declines")
	}
	if now := f.conv(c.ID); now.AssigneeID == a.ID {
		t.Fatalf("node 2 gave the conversation back to the agent who sent it back on node 1 (status %s)", now.Status)
	}
}
