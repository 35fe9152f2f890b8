package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// recorder is an outlet that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	frames []*frame
}

func (r *recorder) push(f *frame) {
	r.mu.Lock()
	r.frames = append(r.frames, f)
	r.mu.Unlock()
}

// messages returns the (conversation, seq) of the message frames received.
func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, f := range r.frames {
		if f.msg {
			out = append(out, fmt.Sprintf("%d/%d", f.conv, f.seq))
		}
	}
	return out
}

// fakeStore is the part of the store the sequencer reads.
type fakeStore struct {
	msgs []core.Message // in ID order
	err  error
}

func (s *fakeStore) feed(_ context.Context, after int64, limit int) ([]core.Message, error) {
	if s.err != nil {
		return nil, s.err
	}
	var out []core.Message
	for _, m := range s.msgs {
		if m.ID > after && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
}

func (s *fakeStore) conv(_ context.Context, id int64) (core.Conversation, error) {
	return core.Conversation{ID: id, Channel: "web", ExternalID: fmt.Sprintf("a:%032d", id)}, nil
}

// history builds messages 1..n spread over conversations: message i is in
// conversation conv(i), with that conversation's next sequence number.
func history(n int, conv func(i int) int64, internal func(i int) bool) []core.Message {
	seqs := map[int64]int64{}
	out := make([]core.Message, 0, n)
	for i := 1; i <= n; i++ {
		c := conv(i)
		seqs[c]++
		vis := core.Public
		if internal != nil && internal(i) {
			vis = core.Internal
		}
		out = append(out, core.Message{ID: int64(i), ConversationID: c, Seq: seqs[c], Visibility: vis,
			SenderKind: core.SenderAgent, Kind: core.KindText, Text: fmt.Sprint("m", i), Status: core.MsgSent})
	}
	return out
}

func update(st *fakeStore, m core.Message) core.Update {
	c, _ := st.conv(context.Background(), m.ConversationID)
	c.LastSeq = m.Seq
	return core.Update{Type: core.UpdateMessage, Message: &m, Conversation: &c}
}

func TestSequencerReleasesInIDOrder(t *testing.T) {
	tests := []struct {
		name  string
		order []int // arrival order of message IDs (1-based)
	}{
		{"in order", []int{1, 2, 3, 4, 5}},
		{"reversed", []int{5, 4, 3, 2, 1}},
		{"shuffled", []int{2, 5, 1, 4, 3}},
		{"with repeats", []int{2, 1, 2, 3, 1, 5, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{msgs: history(5, func(i int) int64 { return int64(i%2 + 1) }, nil)}
			s := newSequencer(0, time.Second)
			var got []int64
			now := time.Unix(0, 0)
			for _, i := range tt.order {
				s.add(update(st, st.msgs[i-1]), now, func(u core.Update) { got = append(got, u.Message.ID) })
			}
			if !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
				t.Fatalf("released %v", got)
			}
			if _, held := s.deadline(); held {
				t.Fatal("still holding after every update arrived")
			}
		})
	}
}

func TestSequencerFillsAGapFromTheStore(t *testing.T) {
	st := &fakeStore{msgs: history(6, func(int) int64 { return 7 }, nil)}
	s := newSequencer(0, 500*time.Millisecond)
	s.feed, s.conv = st.feed, st.conv
	t0 := time.Unix(1000, 0)
	var got []core.Update
	emit := func(u core.Update) { got = append(got, u) }
	s.add(update(st, st.msgs[0]), t0, emit)                       // 1
	s.add(update(st, st.msgs[3]), t0.Add(time.Millisecond), emit) // 4: 2 and 3 are late
	s.add(core.Update{Type: core.UpdateStatus, Message: &core.Message{ID: 4, Status: core.MsgRead}}, t0, emit)
	s.add(core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 7}}, t0, emit)
	if len(got) != 2 || got[1].Type != core.UpdateTyping {
		t.Fatalf("released %d updates before the gap filled, want 1 and the typing", len(got))
	}
	d, held := s.deadline()
	if !held || !d.Equal(t0.Add(time.Millisecond+500*time.Millisecond)) {
		t.Fatalf("deadline %v %v", d, held)
	}
	// The bound passes: 2 and 3 come from the store, 4 from what was held,
	// then its status.
	if err := s.fill(context.Background(), d, emit); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range got[2:] {
		ids = append(ids, fmt.Sprint(u.Type, u.Message.ID))
	}
	if want := []string{"message2", "message3", "message4", "status4"}; !slices.Equal(ids, want) {
		t.Fatalf("released %v, want %v", ids, want)
	}
	if got[2].Conversation == nil || got[2].Conversation.ID != 7 {
		t.Fatal("an update rebuilt from the store has no conversation")
	}
	// The late ones arrive after all: dropped, not repeated.
	n := len(got)
	s.add(update(st, st.msgs[1]), d, emit)
	s.add(update(st, st.msgs[2]), d, emit)
	s.add(update(st, st.msgs[4]), d, emit) // 5 follows at once
	if len(got) != n+1 || got[n].Message.ID != 5 {
		t.Fatalf("after the fill: %d more updates", len(got)-n)
	}
}

func TestSequencerPermanentGapAndStoreErrors(t *testing.T) {
	// ID 2 never committed (a rolled-back write on a store whose IDs can
	// have holes): the store shows it does not exist.
	msgs := history(3, func(int) int64 { return 1 }, nil)
	st := &fakeStore{msgs: []core.Message{msgs[0], msgs[2]}}
	s := newSequencer(0, time.Second)
	s.feed, s.conv = st.feed, st.conv
	var got []int64
	emit := func(u core.Update) { got = append(got, u.Message.ID) }
	t0 := time.Unix(0, 0)
	s.add(update(st, msgs[0]), t0, emit)
	s.add(update(st, msgs[2]), t0, emit)
	st.err = errors.New("disk on fire")
	if err := s.fill(context.Background(), t0.Add(time.Second), emit); err == nil {
		t.Fatal("fill hid a store error")
	}
	if d, held := s.deadline(); !held || !d.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("after an error, retry at %v (held %v)", d, held)
	}
	st.err = nil
	if err := s.fill(context.Background(), t0.Add(2*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{1, 3}) {
		t.Fatalf("released %v", got)
	}
}

// TestHubResequencesOutOfOrderUpdates injects updates in a scrambled order
// through the sequencer into the hub, as the feed loop does, and checks
// what visitors and agents receive.
func TestHubResequencesOutOfOrderUpdates(t *testing.T) {
	// 40 messages over conversations 1–4; every fifth is an internal note.
	st := &fakeStore{msgs: history(40, func(i int) int64 { return int64(i%4 + 1) }, func(i int) bool { return i%5 == 0 })}
	h := newHub("web", nil)
	s := newSequencer(0, time.Second)
	s.feed, s.conv = st.feed, st.conv

	agent := &recorder{}
	h.register(&sub{aud: audAgent, agentID: 1, out: agent})
	visitors := map[int64]*recorder{}
	for c := int64(1); c <= 4; c++ {
		conv, _ := st.conv(context.Background(), c)
		r := &recorder{}
		visitors[c] = r
		// Conversation 4's visitor has not been joined to it yet: its first
		// message joins the identity's connections.
		h.register(&sub{aud: audVisitor, identity: conv.ExternalID, out: r})
		if c != 4 {
			h.joinIdentity(conv.ExternalID, c)
		}
	}
	// Scramble: reverse within blocks of 7, so most updates arrive early.
	var order []int
	for b := 0; b < 40; b += 7 {
		for i := min(b+7, 40); i > b; i-- {
			order = append(order, i)
		}
	}
	now := time.Unix(0, 0)
	for _, i := range order {
		s.add(update(st, st.msgs[i-1]), now, h.dispatch)
	}
	if _, held := s.deadline(); held {
		t.Fatal("updates still held")
	}
	// The agent: every message, in ID order.
	var ids []int64
	for _, f := range agent.frames {
		ids = append(ids, f.id)
	}
	for i := range ids {
		if ids[i] != int64(i+1) {
			t.Fatalf("agent received IDs %v", ids)
		}
	}
	// Each visitor: its conversation's public messages, in sequence order.
	for c, r := range visitors {
		var want []string
		for _, m := range st.msgs {
			if m.ConversationID == c && m.Visibility == core.Public {
				want = append(want, fmt.Sprintf("%d/%d", c, m.Seq))
			}
		}
		if got := r.messages(); !slices.Equal(got, want) {
			t.Errorf("visitor of #%d got %v, want %v", c, got, want)
		}
		for _, f := range r.frames {
			var fr struct {
				Message map[string]any `json:"message"`
			}
			_ = json.Unmarshal(f.data, &fr)
			if _, leaked := fr.Message["visibility"]; leaked {
				t.Fatalf("visitor was shown the agent view: %s", f.data)
			}
		}
	}
	if h.nVisitors.Load() != 4 || h.nAgents.Load() != 1 {
		t.Fatalf("counts %d visitors %d agents", h.nVisitors.Load(), h.nAgents.Load())
	}
}

// A claimed conversation reaches the claiming subscriber alone, until
// joinIdentity; a claim never joined goes with its subscriber.
func TestHubClaim(t *testing.T) {
	h := newHub("web", nil)
	a, b := &recorder{}, &recorder{}
	sa := &sub{aud: audVisitor, identity: "a:1", out: a}
	sb := &sub{aud: audVisitor, identity: "a:1", out: b} // the same visitor in another tab
	h.register(sb)
	h.register(sa)
	h.claim(sa, 10)
	typing := core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 10, SenderKind: core.SenderAgent, SenderID: 3, On: true}}
	h.dispatch(typing)
	if len(a.frames) != 1 || len(b.frames) != 0 {
		t.Fatalf("claimed: typing reached %d and %d tabs, want 1 and 0", len(a.frames), len(b.frames))
	}
	h.joinIdentity("a:1", 10)
	h.dispatch(typing)
	if len(a.frames) != 2 || len(b.frames) != 1 {
		t.Fatalf("joined: typing reached %d and %d tabs, want 2 and 1", len(a.frames), len(b.frames))
	}

	sc := &sub{aud: audVisitor, identity: "a:1", out: &recorder{}}
	h.register(sc)
	h.claim(sc, 20) // refused: never joined
	h.unregister(sc)
	h.unregister(sa)
	h.unregister(sb)
	for i := range h.convs {
		if len(h.convs[i].m) != 0 || len(h.idents[i].m) != 0 {
			t.Fatal("index entries left after every subscriber left")
		}
	}
}

func TestHubIndexesAndUnregister(t *testing.T) {
	h := newHub("web", nil)
	a, b := &recorder{}, &recorder{}
	sa := &sub{aud: audVisitor, identity: "a:1", out: a}
	sb := &sub{aud: audVisitor, identity: "a:1", out: b} // the same visitor in another tab
	h.register(sa)
	h.joinIdentity("a:1", 10)
	h.register(sb) // joins #10 through the identity
	typing := core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 10, SenderKind: core.SenderAgent, SenderID: 3, On: true}}
	h.dispatch(typing)
	if len(a.frames) != 1 || len(b.frames) != 1 {
		t.Fatalf("typing reached %d and %d tabs", len(a.frames), len(b.frames))
	}
	// A visitor's own typing is not echoed to visitors.
	h.dispatch(core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 10, SenderKind: core.SenderContact}})
	if len(a.frames) != 1 {
		t.Fatal("visitor typing echoed to the visitor")
	}
	// Another identity's conversation does not reach them.
	h.dispatch(core.Update{Type: core.UpdateMessage, Message: &core.Message{ID: 1, ConversationID: 11, Seq: 1, Visibility: core.Public},
		Conversation: &core.Conversation{ID: 11, Channel: "web", ExternalID: "a:2"}})
	// Nor does a conversation of the same external id on another instance.
	h.dispatch(core.Update{Type: core.UpdateMessage, Message: &core.Message{ID: 2, ConversationID: 12, Seq: 1, Visibility: core.Public},
		Conversation: &core.Conversation{ID: 12, Channel: "other", ExternalID: "a:1"}})
	if len(a.frames) != 1 || len(b.frames) != 1 {
		t.Fatal("a frame reached the wrong visitor")
	}
	h.unregister(sa)
	h.unregister(sa) // harmless
	h.dispatch(typing)
	if len(a.frames) != 1 || len(b.frames) != 2 {
		t.Fatalf("after unregister: %d and %d", len(a.frames), len(b.frames))
	}
	h.unregister(sb)
	for i := range h.convs {
		if len(h.convs[i].m) != 0 || len(h.idents[i].m) != 0 {
			t.Fatal("index entries left after every subscriber left")
		}
	}
}

func TestCursorFilterDropsWhatTheClientHas(t *testing.T) {
	vis := cursorFilter{}
	vis.at(5, 3)
	for _, tt := range []struct {
		f    frame
		pass bool
	}{
		{frame{msg: true, conv: 5, seq: 3}, false},
		{frame{msg: true, conv: 5, seq: 4}, true},
		{frame{msg: true, conv: 5, seq: 4}, false},
		{frame{msg: true, conv: 6, seq: 1}, true},
		{frame{}, true}, // not a message
	} {
		if got := vis.pass(&tt.f); got != tt.pass {
			t.Errorf("visitor %+v: pass = %v", tt.f, got)
		}
	}
	ag := cursorFilter{agent: true, lastID: 10}
	if ag.pass(&frame{msg: true, id: 10}) || !ag.pass(&frame{msg: true, id: 11}) || ag.pass(&frame{msg: true, id: 11}) {
		t.Fatal("agent filter")
	}
}

func TestLastMessageID(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 1000, 1025} {
		st := &fakeStore{msgs: history(n, func(int) int64 { return 1 }, nil)}
		got, err := lastMessageID(context.Background(), st.feed)
		if err != nil || got != int64(n) {
			t.Errorf("%d messages: last = %d, %v", n, got, err)
		}
	}
}

// TestSequencerProbeFindsALostLastUpdate: the update of the newest message
// never came (its publish was lost) and nothing came after it: the probe
// finds it in the store, and once the gap's wait has passed it is released
// from there; an update that does come meanwhile is released as usual.
func TestSequencerProbeFindsALostLastUpdate(t *testing.T) {
	st := &fakeStore{msgs: history(3, func(int) int64 { return 7 }, nil)}
	s := newSequencer(1, 500*time.Millisecond)
	s.feed, s.conv = st.feed, st.conv
	t0 := time.Unix(1000, 0)
	var got []int64
	emit := func(u core.Update) { got = append(got, u.Message.ID) }
	if err := s.probe(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	d, held := s.deadline()
	if !held || !d.Equal(t0.Add(500*time.Millisecond)) {
		t.Fatalf("after the probe: deadline %v, held %v; want the 2 and 3 waited for", d, held)
	}
	s.add(update(st, st.msgs[1]), t0, emit) // 2's update was only late
	if err := s.fill(context.Background(), d, emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("released %v, want 2 (its update) and 3 (from the store)", got)
	}
	if _, held := s.deadline(); held {
		t.Error("still holding after the fill")
	}
	if err := s.probe(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if _, held := s.deadline(); held {
		t.Error("a probe with nothing new holds something")
	}
}
