package bridge

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Sequencer puts the message updates that reach a node back into commit
// order before its consumer (the web channel's hub, the push fallback)
// takes them.
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
// A Sequencer is used from one goroutine (its consumer's loop) and is not
// safe for concurrent use.
type Sequencer struct {
	last    int64 // every message ID ≤ last has been released (or was before we started)
	pending map[int64]*held
	max     int64     // highest pending ID
	gap     time.Time // when the current gap was seen; zero when nothing is held
	wait    time.Duration

	feed FeedFunc
	conv func(ctx context.Context, id int64) (core.Conversation, error)
}

// FeedFunc reads the messages with ID > after, in ID order, at most limit
// (core.Store.Feed).
type FeedFunc func(ctx context.Context, after int64, limit int) ([]core.Message, error)

// A Sequencer's consumer waits ResequenceWait for a gap in message IDs
// before it has Fill read it, and has it Probe the store every ProbeEvery.
const (
	ResequenceWait = 500 * time.Millisecond
	ProbeEvery     = 2 * time.Second
)

// fillPage is how many messages Fill and Probe read at a time.
const fillPage = 500

type held struct {
	msg    *core.Update  // the message update, once it has arrived
	status []core.Update // status updates for it that arrived before it was released
}

// NewSequencer returns a Sequencer that has released every message ID up
// to last, and waits for a gap at most wait. feed reads the store's
// messages (core.Store.Feed), conv a conversation (core.Store.Conversation),
// for the updates it rebuilds from the store.
func NewSequencer(last int64, wait time.Duration, feed FeedFunc, conv func(ctx context.Context, id int64) (core.Conversation, error)) *Sequencer {
	return &Sequencer{last: last, wait: wait, pending: map[int64]*held{}, feed: feed, conv: conv}
}

// Last returns the ID up to which every message has been released (or was
// before the Sequencer started).
func (s *Sequencer) Last() int64 { return s.last }

// Add takes one update and releases, in order, what can go now.
func (s *Sequencer) Add(u core.Update, now time.Time, emit func(core.Update)) {
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

func (s *Sequencer) hold(id int64, now time.Time) *held {
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
func (s *Sequencer) release(id int64, u *core.Update, emit func(core.Update)) {
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
func (s *Sequencer) drain(now time.Time, emit func(core.Update)) {
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

// Deadline is when the current gap stops being waited for; ok is false when
// nothing is held.
func (s *Sequencer) Deadline() (t time.Time, ok bool) {
	if len(s.pending) == 0 {
		return time.Time{}, false
	}
	return s.gap.Add(s.wait), true
}

// Probe looks in the store past last when nothing is held. A message whose
// update never reached this node (its publish was lost) shows as a gap only
// when a later update arrives; with nothing after it, the consumer would
// never get it. What Probe finds is held, without an update, as a gap seen
// at now: updates still on their way release it as usual, and Fill reads
// the rest from the store once the gap's wait has passed; a full page (a
// backlog, when the bus delivers nothing) is due at once, and a consumer
// probes again after each fill to read a backlog at the store's pace. It
// reports whether it found anything.
func (s *Sequencer) Probe(ctx context.Context, now time.Time) (bool, error) {
	if len(s.pending) > 0 {
		return false, nil // a gap is being waited for; Fill reads it
	}
	page, err := s.feed(ctx, s.last, fillPage)
	if err != nil || len(page) == 0 {
		return false, err
	}
	s.hold(page[len(page)-1].ID, now)
	if len(page) == fillPage {
		// A full page is a backlog, not updates on their way: it is due
		// now, and the consumer probes again after filling it.
		s.gap = now.Add(-s.wait)
	}
	return true, nil
}

// Fill reads the held range from the store, a page at a time, and releases
// everything in it in ID order: the updates that arrived, and messages
// rebuilt from the store for those that did not (with their conversation,
// or none if it is gone). On a store error what it has released stays
// released, and the rest of the gap is retried after another wait.
func (s *Sequencer) Fill(ctx context.Context, now time.Time, emit func(core.Update)) error {
	if len(s.pending) == 0 {
		return nil
	}
	// What is held but not in the store cannot be a message (the store has
	// every committed one): status updates that raced ahead. They are
	// released in ID order among the messages.
	held := make([]int64, 0, len(s.pending))
	for id := range s.pending {
		if id <= s.max {
			held = append(held, id)
		}
	}
	slices.Sort(held)
	releaseHeld := func(below int64) {
		for len(held) > 0 && held[0] < below {
			if s.pending[held[0]] != nil {
				s.release(held[0], nil, emit)
			}
			held = held[1:]
		}
	}
	convs := map[int64]*core.Conversation{}
	for s.last < s.max {
		page, err := s.feed(ctx, s.last, fillPage)
		if err != nil {
			s.gap = now
			return err
		}
		for i := range page {
			m := &page[i]
			if m.ID > s.max {
				break
			}
			releaseHeld(m.ID)
			if h := s.pending[m.ID]; h != nil && h.msg != nil {
				s.release(m.ID, nil, emit)
				continue
			}
			c, ok := convs[m.ConversationID]
			if !ok {
				switch cv, err := s.conv(ctx, m.ConversationID); {
				case err == nil:
					c = &cv
				case !errors.Is(err, core.ErrNotFound):
					// Released without its conversation, the message would
					// be passed over for good: it and what follows wait
					// for the next fill.
					s.gap = now
					return err
				}
				convs[m.ConversationID] = c // nil: the conversation is gone
			}
			s.release(m.ID, &core.Update{Type: core.UpdateMessage, Message: m, Conversation: c}, emit)
		}
		if len(page) < fillPage || page[len(page)-1].ID >= s.max {
			break
		}
	}
	releaseHeld(s.max + 1)
	if s.max > s.last {
		s.last = s.max
	}
	s.drain(now, emit)
	return nil
}

// LastMessageID finds the highest message ID in the store with Feed alone,
// a few dozen reads (see SearchFeed); 0 when the store has none.
func LastMessageID(ctx context.Context, feed FeedFunc) (int64, error) {
	return SearchFeed(0, func(after int64) (bool, error) {
		ms, err := feed(ctx, after, 1)
		return len(ms) > 0, err
	})
}

// SearchFeed returns the least ID at or above from for which ok is false,
// where ok holds up to some ID and not after it (a property of the log in
// ID order, such as "a message follows this ID"): an exponential then a
// binary search, O(log n) calls of ok.
func SearchFeed(from int64, ok func(id int64) (bool, error)) (int64, error) {
	lo := from
	if yes, err := ok(lo); err != nil || !yes {
		return lo, err
	}
	// ok(lo) holds; find hi where it does not.
	hi := lo
	for step := int64(1); ; step *= 2 {
		hi = lo + step
		yes, err := ok(hi)
		if err != nil {
			return 0, err
		}
		if !yes {
			break
		}
		lo = hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		yes, err := ok(mid)
		if err != nil {
			return 0, err
		}
		if yes {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi, nil
}
