package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// feedStore is the part of the store a Sequencer reads.
type feedStore struct {
	msgs      []core.Message // in ID order
	err       error
	reads     int
	failAfter int   // reads that succeed before each one fails; 0: no such limit
	convErr   error // what reading a conversation returns
}

func (s *feedStore) feed(_ context.Context, after int64, limit int) ([]core.Message, error) {
	s.reads++
	if s.err != nil {
		return nil, s.err
	}
	if s.failAfter > 0 && s.reads > s.failAfter {
		return nil, errors.New("store unavailable")
	}
	var out []core.Message
	for _, m := range s.msgs {
		if m.ID > after && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
}

func (s *feedStore) conv(_ context.Context, id int64) (core.Conversation, error) {
	if s.convErr != nil {
		return core.Conversation{}, s.convErr
	}
	return core.Conversation{ID: id}, nil
}

// history builds messages 1..n; message i is in conversation conv(i), with
// that conversation's next sequence number.
func history(n int, conv func(i int) int64) []core.Message {
	seqs := map[int64]int64{}
	out := make([]core.Message, 0, n)
	for i := 1; i <= n; i++ {
		c := conv(i)
		seqs[c]++
		out = append(out, core.Message{ID: int64(i), ConversationID: c, Seq: seqs[c], Kind: core.KindText, Text: fmt.Sprint("m", i)})
	}
	return out
}

func update(st *feedStore, m core.Message) core.Update {
	c, _ := st.conv(context.Background(), m.ConversationID)
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
			st := &feedStore{msgs: history(5, func(i int) int64 { return int64(i%2 + 1) })}
			s := bridge.NewSequencer(0, time.Second, nil, nil)
			var got []int64
			now := time.Unix(0, 0)
			for _, i := range tt.order {
				s.Add(update(st, st.msgs[i-1]), now, func(u core.Update) { got = append(got, u.Message.ID) })
			}
			if !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
				t.Fatalf("released %v", got)
			}
			if _, held := s.Deadline(); held {
				t.Fatal("still holding after every update arrived")
			}
		})
	}
}

func TestSequencerFillsAGapFromTheStore(t *testing.T) {
	st := &feedStore{msgs: history(6, func(int) int64 { return 7 })}
	s := bridge.NewSequencer(0, 500*time.Millisecond, st.feed, st.conv)
	t0 := time.Unix(1000, 0)
	var got []core.Update
	emit := func(u core.Update) { got = append(got, u) }
	s.Add(update(st, st.msgs[0]), t0, emit)                       // 1
	s.Add(update(st, st.msgs[3]), t0.Add(time.Millisecond), emit) // 4: 2 and 3 are late
	s.Add(core.Update{Type: core.UpdateStatus, Message: &core.Message{ID: 4, Status: core.MsgRead}}, t0, emit)
	s.Add(core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 7}}, t0, emit)
	if len(got) != 2 || got[1].Type != core.UpdateTyping {
		t.Fatalf("released %d updates before the gap filled, want 1 and the typing", len(got))
	}
	d, held := s.Deadline()
	if !held || !d.Equal(t0.Add(time.Millisecond+500*time.Millisecond)) {
		t.Fatalf("deadline %v %v", d, held)
	}
	// The bound passes: 2 and 3 come from the store, 4 from what was held,
	// then its status.
	if err := s.Fill(context.Background(), d, emit); err != nil {
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
	s.Add(update(st, st.msgs[1]), d, emit)
	s.Add(update(st, st.msgs[2]), d, emit)
	s.Add(update(st, st.msgs[4]), d, emit) // 5 follows at once
	if len(got) != n+1 || got[n].Message.ID != 5 {
		t.Fatalf("after the fill: %d more updates", len(got)-n)
	}
}

func TestSequencerPermanentGapAndStoreErrors(t *testing.T) {
	// ID 2 never committed (a rolled-back write on a store whose IDs can
	// have holes): the store shows it does not exist.
	msgs := history(3, func(int) int64 { return 1 })
	st := &feedStore{msgs: []core.Message{msgs[0], msgs[2]}}
	s := bridge.NewSequencer(0, time.Second, st.feed, st.conv)
	var got []int64
	emit := func(u core.Update) { got = append(got, u.Message.ID) }
	t0 := time.Unix(0, 0)
	s.Add(update(st, msgs[0]), t0, emit)
	s.Add(update(st, msgs[2]), t0, emit)
	st.err = errors.New("disk on fire")
	if err := s.Fill(context.Background(), t0.Add(time.Second), emit); err == nil {
		t.Fatal("fill hid a store error")
	}
	if d, held := s.Deadline(); !held || !d.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("after an error, retry at %v (held %v)", d, held)
	}
	st.err = nil
	if err := s.Fill(context.Background(), t0.Add(2*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{1, 3}) {
		t.Fatalf("released %v", got)
	}
}

// TestSequencerProbeFindsALostLastUpdate: the update of the newest message
// never came (its publish was lost) and nothing came after it: the probe
// finds it in the store, and once the gap's wait has passed it is released
// from there; an update that does come meanwhile is released as usual.
func TestSequencerProbeFindsALostLastUpdate(t *testing.T) {
	st := &feedStore{msgs: history(3, func(int) int64 { return 7 })}
	s := bridge.NewSequencer(1, 500*time.Millisecond, st.feed, st.conv)
	t0 := time.Unix(1000, 0)
	var got []int64
	emit := func(u core.Update) { got = append(got, u.Message.ID) }
	if _, err := s.Probe(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	d, held := s.Deadline()
	if !held || !d.Equal(t0.Add(500*time.Millisecond)) {
		t.Fatalf("after the probe: deadline %v, held %v; want the 2 and 3 waited for", d, held)
	}
	s.Add(update(st, st.msgs[1]), t0, emit) // 2's update was only late
	if err := s.Fill(context.Background(), d, emit); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("released %v, want 2 (its update) and 3 (from the store)", got)
	}
	if _, held := s.Deadline(); held {
		t.Error("still holding after the fill")
	}
	if _, err := s.Probe(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if _, held := s.Deadline(); held {
		t.Error("a probe with nothing new holds something")
	}
}

// TestSequencerFillsALongGapAPageAtATime: a gap longer than a page is read
// and released a page at a time, so a store error half-way keeps what was
// released, and the next fill goes on from there without repeating it.
func TestSequencerFillsALongGapAPageAtATime(t *testing.T) {
	msgs := history(1200, func(i int) int64 { return int64(i%3 + 1) })
	// ID 600 never committed (a hole), yet a status update names it: it
	// is released in its place among the messages.
	st := &feedStore{msgs: slices.Delete(msgs, 599, 600)}
	s := bridge.NewSequencer(0, time.Second, st.feed, st.conv)
	var got []string
	emit := func(u core.Update) { got = append(got, fmt.Sprint(u.Type, u.Message.ID, u.Message.Text)) }
	t0 := time.Unix(0, 0)
	s.Add(update(st, st.msgs[0]), t0, emit)
	last := update(st, st.msgs[1198])
	last.Message.Text = "from the bus"
	s.Add(last, t0, emit)
	s.Add(core.Update{Type: core.UpdateStatus, Message: &core.Message{ID: 700}}, t0, emit)
	s.Add(core.Update{Type: core.UpdateStatus, Message: &core.Message{ID: 600}}, t0, emit)
	st.failAfter = 1
	if err := s.Fill(context.Background(), t0.Add(time.Second), emit); err == nil {
		t.Fatal("fill hid a store error")
	}
	if len(got) != 501 || s.Last() != 501 {
		t.Fatalf("after the first page and an error: released %d, last %d; want 501", len(got), s.Last())
	}
	if d, held := s.Deadline(); !held || !d.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("after an error, retry at %v (held %v)", d, held)
	}
	st.failAfter = 0
	if err := s.Fill(context.Background(), t0.Add(2*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 1; i <= 1200; i++ {
		text := fmt.Sprint("m", i)
		if i == 1200 {
			text = "from the bus"
		}
		if i == 600 {
			want = append(want, fmt.Sprint(core.UpdateStatus, 600))
			continue
		}
		want = append(want, fmt.Sprint(core.UpdateMessage, i, text))
		if i == 700 {
			want = append(want, fmt.Sprint(core.UpdateStatus, 700))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("released %d updates, not each once in ID order (first difference at %d)", len(got), firstDiff(got, want))
	}
	if _, held := s.Deadline(); held || s.Last() != 1200 {
		t.Fatalf("after the fill: held %v, last %d", held, s.Last())
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestLastMessageID(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 1000, 1025} {
		st := &feedStore{msgs: history(n, func(int) int64 { return 1 })}
		got, err := bridge.LastMessageID(context.Background(), st.feed)
		if err != nil || got != int64(n) {
			t.Errorf("%d messages: last = %d, %v", n, got, err)
		}
	}
}

// A message read from the store whose conversation cannot be read is not
// released without it (its consumer would pass it over): the fill fails
// and is retried. One whose conversation is gone is released without one.
func TestSequencerFillNeedsTheConversation(t *testing.T) {
	st := &feedStore{msgs: history(4, func(i int) int64 { return int64(i) })}
	s := bridge.NewSequencer(0, time.Second, st.feed, st.conv)
	var got []string
	emit := func(u core.Update) { got = append(got, fmt.Sprint(u.Message.ID, u.Conversation != nil)) }
	t0 := time.Unix(0, 0)
	s.Add(update(st, st.msgs[0]), t0, emit)
	s.Add(update(st, st.msgs[2]), t0, emit) // 2 is late
	st.convErr = errors.New("connection reset")
	if err := s.Fill(context.Background(), t0.Add(time.Second), emit); err == nil {
		t.Fatal("fill hid the conversation read's error")
	}
	if !slices.Equal(got, []string{"1 true"}) || s.Last() != 1 {
		t.Fatalf("after the failed read: released %v, last %d", got, s.Last())
	}
	if d, held := s.Deadline(); !held || !d.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("retry at %v (held %v)", d, held)
	}
	st.convErr = nil
	if err := s.Fill(context.Background(), t0.Add(2*time.Second), emit); err != nil {
		t.Fatal(err)
	}
	s.Add(update(st, st.msgs[3]), t0, emit) // 4, whose update comes
	s.Add(core.Update{Type: core.UpdateStatus, Message: &core.Message{ID: 6}}, t0, emit)
	st.msgs = append(st.msgs, core.Message{ID: 5, ConversationID: 9}, core.Message{ID: 6, ConversationID: 9})
	st.convErr = fmt.Errorf("conversation 9: %w", core.ErrNotFound)
	if err := s.Fill(context.Background(), t0.Add(time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 true", "2 true", "3 true", "4 true", "5 false", "6 false"}; !slices.Equal(got[:6], want) {
		t.Fatalf("released %v, want %v", got, want)
	}
}

// A backlog the bus never delivered (a full page past last) is due at
// once, page after page, so that probing after each fill reads it at the
// store's pace; the short page at its end waits for the bus as usual.
func TestSequencerProbeReadsABacklogAtOnce(t *testing.T) {
	st := &feedStore{msgs: history(1200, func(i int) int64 { return int64(i%5 + 1) })}
	s := bridge.NewSequencer(0, time.Second, st.feed, st.conv)
	var got []int64
	emit := func(u core.Update) { got = append(got, u.Message.ID) }
	now := time.Unix(1000, 0)
	for round := 1; ; round++ {
		if found, err := s.Probe(context.Background(), now); err != nil || !found {
			t.Fatalf("round %d: probe found %v, %v", round, found, err)
		}
		d, held := s.Deadline()
		if !held {
			t.Fatalf("round %d: nothing held after the probe", round)
		}
		if round == 3 {
			if !d.Equal(now.Add(time.Second)) {
				t.Fatalf("the backlog's last, short page is due at %v, want the usual wait", d)
			}
			break
		}
		if d.After(now) {
			t.Fatalf("round %d: a full page is due at %v, not at once (%v)", round, d, now)
		}
		if err := s.Fill(context.Background(), now, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Fill(context.Background(), now.Add(time.Second), emit); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1200 || got[0] != 1 || got[1199] != 1200 || !slices.IsSorted(got) {
		t.Fatalf("released %d messages (%v … %v)", len(got), got[:1], got[len(got)-1:])
	}
}
