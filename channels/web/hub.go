package web

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kefuhq/kefu/core"
)

// hubShards is how many locks the hub's indexes are split over, so that
// sockets registering and leaving on many goroutines do not queue on one.
const hubShards = 64

// audience is who a subscriber is: what it may see and how it is indexed.
type audience uint8

const (
	audVisitor audience = iota + 1
	audAgent
)

// outlet is where the hub hands frames for one subscriber: a WebSocket
// connection's bounded queue, or a long poll's buffer. push must not block:
// the hub calls it from its feed loop, and a slow client must never stall
// the others. An outlet that cannot take a frame drops its client (or, for
// a long poll, stops collecting) on its own.
type outlet interface {
	push(f *frame)
}

// sub is one subscriber of the hub: a live WebSocket or a waiting long
// poll, of a visitor identity or an agent.
type sub struct {
	aud      audience
	identity string // visitors: their identity on this channel instance
	agentID  int64  // agents
	out      outlet
	claimed  int64 // visitors: a conversation listed for this sub alone (see claim)
	// learn, when set, is told the contact of a conversation the hub
	// joins this visitor to (joinIdentity); it must not block.
	learn func(contactID int64)
}

// hub passes updates, in order, to the subscribers this node holds. Its
// indexes are sharded:
//   - visitors by conversation (what a conversation's updates reach), and
//     by identity, so that a new conversation of an identity reaches the
//     identity's live connections: the first message update of a
//     conversation joins every subscriber of its identity to it;
//   - agents in one copy-on-write list: every agent receives everything.
//
// Frames are encoded once per update and audience and shared.
//
// dispatch is called from one goroutine (the feed loop, after the
// sequencer); register, join and unregister from any.
type hub struct {
	channel string     // instance name: which conversations have visitors here
	names   agentNames // for visitor views; may be nil
	seed    maphash.Seed

	convs  [hubShards]convShard
	idents [hubShards]identShard

	agentsMu sync.Mutex
	agents   atomic.Pointer[[]*sub]

	// released is the highest message ID dispatched: an agent connecting
	// without a cursor starts from it.
	released atomic.Int64

	nVisitors, nAgents atomic.Int64
}

type convShard struct {
	mu sync.RWMutex
	m  map[int64][]*sub
}

type identShard struct {
	mu sync.Mutex
	m  map[string]*identSubs
}

// identSubs are the live subscribers of one visitor identity and the
// conversations they have been joined to.
type identSubs struct {
	subs  []*sub
	convs []int64
}

func newHub(channel string, names agentNames) *hub {
	h := &hub{channel: channel, names: names, seed: maphash.MakeSeed()}
	for i := range h.convs {
		h.convs[i].m = map[int64][]*sub{}
		h.idents[i].m = map[string]*identSubs{}
	}
	empty := []*sub{}
	h.agents.Store(&empty)
	return h
}

func (h *hub) convShard(id int64) *convShard { return &h.convs[uint64(id)%hubShards] }

func (h *hub) identShard(identity string) *identShard {
	return &h.idents[maphash.String(h.seed, identity)%hubShards]
}

// register adds s. A visitor is joined to every conversation its
// identity's other subscribers have been joined to (joinIdentity and claim
// add others).
func (h *hub) register(s *sub) {
	if s.aud == audAgent {
		h.agentsMu.Lock()
		old := *h.agents.Load()
		next := make([]*sub, len(old), len(old)+1)
		copy(next, old)
		next = append(next, s)
		h.agents.Store(&next)
		h.agentsMu.Unlock()
		h.nAgents.Add(1)
		return
	}
	is := h.identShard(s.identity)
	is.mu.Lock()
	e := is.m[s.identity]
	if e == nil {
		e = &identSubs{}
		is.m[s.identity] = e
	}
	e.subs = append(e.subs, s)
	for _, c := range e.convs {
		h.addToConv(c, s)
	}
	is.mu.Unlock()
	h.nVisitors.Add(1)
}

// addToConv adds subscribers to conversation c's list, once each.
func (h *hub) addToConv(c int64, subs ...*sub) {
	if c <= 0 {
		return
	}
	cs := h.convShard(c)
	cs.mu.Lock()
	list := cs.m[c]
	for _, s := range subs {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	cs.m[c] = list
	cs.mu.Unlock()
}

// claim lists visitor s, alone, on conversation c, which it resumes but
// which is not yet known to be its identity's: c's updates reach s (held
// until the check) and none of the identity's other subscribers. Once the
// check passes, joinIdentity joins them all; unregister drops the claim.
func (h *hub) claim(s *sub, c int64) {
	s.claimed = c
	h.addToConv(c, s)
}

// removeFromConv takes s off conversation c's list.
func (h *hub) removeFromConv(c int64, s *sub) {
	cs := h.convShard(c)
	cs.mu.Lock()
	list := cs.m[c]
	if j := slices.Index(list, s); j >= 0 {
		list = slices.Delete(list, j, j+1)
	}
	if len(list) == 0 {
		delete(cs.m, c)
	} else {
		cs.m[c] = list
	}
	cs.mu.Unlock()
}

// joinIdentity joins every live subscriber of identity to conversation c,
// whose contact is contact (0: not known here). It reports whether the
// identity has subscribers here. The subscribers newly joined learn the
// contact (sub.learn).
func (h *hub) joinIdentity(identity string, c, contact int64) bool {
	is := h.identShard(identity)
	is.mu.Lock()
	e := is.m[identity]
	if e == nil {
		is.mu.Unlock()
		return false
	}
	var learners []*sub
	if !slices.Contains(e.convs, c) {
		e.convs = append(e.convs, c)
		h.addToConv(c, e.subs...)
		if contact > 0 {
			for _, s := range e.subs {
				if s.learn != nil {
					learners = append(learners, s)
				}
			}
		}
	}
	is.mu.Unlock()
	for _, s := range learners {
		s.learn(contact)
	}
	return true
}

// unregister removes s. It is harmless for a subscriber never registered.
func (h *hub) unregister(s *sub) {
	if s.aud == audAgent {
		h.agentsMu.Lock()
		old := *h.agents.Load()
		i := slices.Index(old, s)
		if i >= 0 {
			next := make([]*sub, 0, len(old)-1)
			next = append(next, old[:i]...)
			next = append(next, old[i+1:]...)
			h.agents.Store(&next)
			h.nAgents.Add(-1)
		}
		h.agentsMu.Unlock()
		return
	}
	is := h.identShard(s.identity)
	is.mu.Lock()
	defer is.mu.Unlock()
	if s.claimed > 0 {
		h.removeFromConv(s.claimed, s)
	}
	e := is.m[s.identity]
	if e == nil {
		return
	}
	i := slices.Index(e.subs, s)
	if i < 0 {
		return
	}
	e.subs = slices.Delete(e.subs, i, i+1)
	h.nVisitors.Add(-1)
	for _, c := range e.convs {
		h.removeFromConv(c, s)
	}
	if len(e.subs) == 0 {
		delete(is.m, s.identity)
	}
}

// eachVisitor calls f for every visitor subscriber of conversation c,
// under the shard's read lock (f must not block or call into the hub).
func (h *hub) eachVisitor(c int64, f func(*sub)) {
	cs := h.convShard(c)
	cs.mu.RLock()
	for _, s := range cs.m[c] {
		f(s)
	}
	cs.mu.RUnlock()
}

func (h *hub) hasVisitors(c int64) bool {
	cs := h.convShard(c)
	cs.mu.RLock()
	n := len(cs.m[c])
	cs.mu.RUnlock()
	return n > 0
}

// dispatch passes one update, released in order by the sequencer, to the
// subscribers it concerns, encoding it at most once per audience.
func (h *hub) dispatch(u core.Update) {
	conv := u.ConversationID()
	agents := *h.agents.Load()
	switch u.Type {
	case core.UpdateMessage:
		m := u.Message
		if m == nil {
			return
		}
		if m.ID > h.released.Load() {
			h.released.Store(m.ID)
		}
		if c := u.Conversation; c != nil && c.Channel == h.channel && c.ExternalID != "" {
			h.joinIdentity(c.ExternalID, c.ID, c.ContactID)
		}
		if m.VisibleToContact() && h.hasVisitors(conv) {
			f := visitorMessageFrame(m, h.names)
			h.eachVisitor(conv, func(s *sub) { s.out.push(f) })
		}
		if len(agents) > 0 {
			f := agentMessageFrame(m, u.Conversation)
			for _, s := range agents {
				s.out.push(f)
			}
		}
	case core.UpdateStatus:
		m := u.Message
		if m == nil {
			return
		}
		if m.VisibleToContact() && h.hasVisitors(conv) {
			f := statusFrame(m, false)
			h.eachVisitor(conv, func(s *sub) { s.out.push(f) })
		}
		h.toAgents(agents, func() *frame { return statusFrame(m, true) })
	case core.UpdateReceipt:
		if u.Receipt == nil {
			return
		}
		f := receiptFrame(u.Receipt)
		if h.hasVisitors(conv) {
			h.eachVisitor(conv, func(s *sub) { s.out.push(f) })
		}
		for _, s := range agents {
			s.out.push(f)
		}
	case core.UpdateTyping:
		t := u.Typing
		if t == nil {
			return
		}
		// Each side sees the other side typing; agents also see each other.
		if t.SenderKind != core.SenderContact && h.hasVisitors(conv) {
			f := typingFrame(t, false, h.names)
			h.eachVisitor(conv, func(s *sub) { s.out.push(f) })
		}
		h.toAgents(agents, func() *frame { return typingFrame(t, true, h.names) })
	case core.UpdateConversation:
		if u.Conversation == nil {
			return
		}
		h.toAgents(agents, func() *frame { return conversationFrame(u.Conversation) })
	}
}

func (h *hub) toAgents(agents []*sub, build func() *frame) {
	if len(agents) == 0 {
		return
	}
	f := build()
	for _, s := range agents {
		s.out.push(f)
	}
}
