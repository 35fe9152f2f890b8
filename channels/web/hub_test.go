package web

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
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

// TestHubResequencesOutOfOrderUpdates injects updates in a scrambled order
// through the sequencer into the hub, as the feed loop does, and checks
// what visitors and agents receive.
func TestHubResequencesOutOfOrderUpdates(t *testing.T) {
	// 40 messages over conversations 1–4; every fifth is an internal note.
	st := &fakeStore{msgs: history(40, func(i int) int64 { return int64(i%4 + 1) }, func(i int) bool { return i%5 == 0 })}
	h := newHub("web", nil)
	s := bridge.NewSequencer(0, time.Second, st.feed, st.conv)

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
			h.joinIdentity(conv.ExternalID, c, 0)
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
		s.Add(update(st, st.msgs[i-1]), now, h.dispatch)
	}
	if _, held := s.Deadline(); held {
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
	h.joinIdentity("a:1", 10, 0)
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
	h.joinIdentity("a:1", 10, 0)
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
