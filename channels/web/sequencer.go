package web

import (
	"context"
	"slices"
	"time"

	"github.com/kefuhq/kefu/core"
)

// sequencer puts the message updates that reach a node back into commit
// order before the hub passes them on.
//
// Updates are published on the bus after their commit, from whichever
// goroutine made it (and, clustered, from whichever node), so two commits
// may arrive in either order. The store gives every message an ID that
// increases in commit order, and a message's ID order is also its
// conversation's sequence order. The sequencer releases message updates in
// ID order: a gap means an update that is still in flight, and later ones
// are held until it arrives or until wait has passed since the gap was seen;
// then the missing range is read from the store, which is the truth (a
// reader that has seen ID n sees every committed ID below n).
//
// It orders by the global ID rather than per conversation because an agent's
// cursor is one message ID across all conversations: if an agent were sent
// ID 10 before ID 9 and saved 10, resuming from 10 would skip 9. Global
// order gives every conversation its sequence order as well. The price is
// that a late update holds back other conversations' updates behind it for
// as long as it is late (microseconds on one node; the bound when a publish
// was lost).
//
// Other updates (typing, receipts, conversation changes) are not ordered:
// they pass at once, except a status update for a message that is still
// held, which waits for that message.
//
// A sequencer is used from one goroutine (the hub's feed loop) and is not
// safe for concurrent use.
type sequencer struct {
	last    int64 // every message ID ≤ last has been released (or was before we started)
	pending map[int64]*held
	max     int64     // highest pending ID
	gap     time.Time // when the current gap was seen; zero when nothing is held
	wait    time.Duration

	// feed reads messages with ID > after, in ID order (core.Store.Feed);
	// conv reads a conversation, for updates rebuilt from the store.
	feed func(ctx context.Context, after int64, limit int) ([]core.Message, error)
	conv func(ctx context.Context, id int64) (core.Conversation, error)
}

type held struct {
	msg    *core.Update  // the message update, once it has arrived
	status []core.Update // status updates for it that arrived before it was released
}

func newSequencer(last int64, wait time.Duration) *sequencer {
	return &sequencer{last: last, wait: wait, pending: map[int64]*held{}}
}

// add takes one update and releases, in order, what can go now.
func (s *sequencer) add(u core.Update, now time.Time, emit func(core.Update)) {
	switch {
	case u.Type == core.UpdateMessage && u.Message != nil:
		id := u.Message.ID
		switch {
		case id <= s.last:
			return // a repeat (at-least-once bus), or already read from the store
		case id == s.last+1:
			s.release(id, &u, emit)
			s.drain(now, emit)
		default:
			h := s.hold(id, now)
			if h.msg != nil {
				return // a repeat of a held update
			}
			h.msg = &u
		}
	case u.Type == core.UpdateStatus && u.Message != nil && u.Message.ID > s.last:
		h := s.hold(u.Message.ID, now)
		h.status = append(h.status, u)
	default:
		emit(u)
	}
}

func (s *sequencer) hold(id int64, now time.Time) *held {
	h := s.pending[id]
	if h == nil {
		h = &held{}
		s.pending[id] = h
		if id > s.max {
			s.max = id
		}
		if s.gap.IsZero() {
			s.gap = now
		}
	}
	return h
}

// release emits the message update for id (u, or the held one) and the
// status updates waiting for it, and moves last to id.
func (s *sequencer) release(id int64, u *core.Update, emit func(core.Update)) {
	h := s.pending[id]
	delete(s.pending, id)
	if u == nil && h != nil {
		u = h.msg
	}
	s.last = id
	if u != nil {
		emit(*u)
	}
	if h != nil {
		for _, st := range h.status {
			emit(st)
		}
	}
}

// drain releases the held updates that follow last without a gap.
func (s *sequencer) drain(now time.Time, emit func(core.Update)) {
	progressed := false
	for {
		h := s.pending[s.last+1]
		if h == nil || h.msg == nil {
			break
		}
		s.release(s.last+1, nil, emit)
		progressed = true
	}
	switch {
	case len(s.pending) == 0:
		s.gap, s.max = time.Time{}, s.last
	case progressed:
		s.gap = now // a new gap: give it its own wait
	}
}

// deadline is when the current gap stops being waited for; ok is false when
// nothing is held.
func (s *sequencer) deadline() (t time.Time, ok bool) {
	if len(s.pending) == 0 {
		return time.Time{}, false
	}
	return s.gap.Add(s.wait), true
}

// probe looks in the store past last when nothing is held. A message whose
// update never reached this node (its publish was lost) shows as a gap only
// when a later update arrives; with nothing after it, live sockets would
// never get it. What probe finds is held, without an update, as a gap
// seen at now: updates still on their way release it as usual, and fill
// reads the rest from the store once the gap's wait has passed.
func (s *sequencer) probe(ctx context.Context, now time.Time) error {
	if len(s.pending) > 0 {
		return nil // a gap is being waited for; fill reads it
	}
	page, err := s.feed(ctx, s.last, 500)
	if err != nil || len(page) == 0 {
		return err
	}
	s.hold(page[len(page)-1].ID, now)
	return nil
}

// fill reads the held range from the store and releases everything in it in
// ID order: the updates that arrived, and messages rebuilt from the store for
// those that did not. On a store error nothing is released, and the gap is
// retried after another wait.
func (s *sequencer) fill(ctx context.Context, now time.Time, emit func(core.Update)) error {
	if len(s.pending) == 0 {
		return nil
	}
	type item struct {
		id  int64
		msg *core.Message
	}
	var found []item
	convs := map[int64]*core.Conversation{}
	after := s.last
	for after < s.max {
		page, err := s.feed(ctx, after, 500)
		if err != nil {
			s.gap = now
			return err
		}
		for i := range page {
			m := &page[i]
			if m.ID > s.max {
				break
			}
			found = append(found, item{m.ID, m})
		}
		if len(page) < 500 || page[len(page)-1].ID >= s.max {
			break
		}
		after = page[len(page)-1].ID
	}
	for _, it := range found {
		if h := s.pending[it.id]; h != nil && h.msg != nil {
			s.release(it.id, nil, emit)
			continue
		}
		c, ok := convs[it.msg.ConversationID]
		if !ok {
			cv, err := s.conv(ctx, it.msg.ConversationID)
			if err == nil {
				c = &cv
			}
			convs[it.msg.ConversationID] = c
		}
		s.release(it.id, &core.Update{Type: core.UpdateMessage, Message: it.msg, Conversation: c}, emit)
	}
	// What is still held but not in the store cannot be a message (the
	// store has every committed one): status updates that raced ahead.
	rest := make([]int64, 0, len(s.pending))
	for id := range s.pending {
		if id <= s.max {
			rest = append(rest, id)
		}
	}
	slices.Sort(rest)
	for _, id := range rest {
		s.release(id, nil, emit)
	}
	if s.max > s.last {
		s.last = s.max
	}
	s.drain(now, emit)
	return nil
}
