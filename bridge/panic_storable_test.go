package bridge_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// pgLikeStore refuses NUL in any text, as PostgreSQL does.
type pgLikeStore struct{ *fakeStore }

func (s pgLikeStore) FinishOutbox(ctx context.Context, id int64, u *core.StatusUpdate) error {
	if u != nil && strings.ContainsRune(u.ExternalID, 0) {
		return errors.New(`invalid byte sequence for encoding "UTF8": 0x00`)
	}
	return s.fakeStore.FinishOutbox(ctx, id, u)
}

type nulIDSender struct{ *fakeSender }

func (s nulIDSender) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	r, err := s.fakeSender.Send(ctx, out)
	if err == nil && out.Message != nil && out.Message.Text == "first" {
		r.ExternalID = "wamid.\x00"
	}
	return r, err
}

// A provider's id for a sent message that no store keeps (a NUL: on
// PostgreSQL FinishOutbox would fail for good, and the conversation's next
// reply wait behind it) is dropped: the reply is finished, and the next
// one goes.
func TestUnstorableExternalIDIsDropped(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *bridge.DelivererConfig) {
		c.Store = pgLikeStore{h.store}
		c.Sender = nulIDSender{h.sender}
		c.ShutdownTimeout = 10 * time.Millisecond
	})
	first := h.store.addReply(channel, 1, "first", h.clock.Now())
	second := h.store.addReply(channel, 1, "second", h.clock.Now())
	h.kick(first)
	h.kick(second)
	h.waitFinished(second.ID)
	if n := len(h.sender.attemptsOf(first.ID)); n != 1 {
		t.Errorf("the first reply was sent %d times, want once", n)
	}
}

type panickyFollow struct{ followRecorder }

func (p *panickyFollow) Follow(ctx context.Context, m core.Message, c core.Conversation) error {
	if m.Text == "boom" {
		var mp map[string]int
		mp["x"] = 1 // a handler bug
	}
	return p.followRecorder.Follow(ctx, m, c)
}

// A follow handler's panic on one message skips that message: before, it
// stopped the process, and again at each restart, the cursor being still
// before it.
func TestFollowerHandlerPanicSkipsTheMessage(t *testing.T) {
	st := newFakeStore()
	fs := &feedOnlyStore{fakeStore: st, msgs: []core.Message{{ID: 1, ConversationID: 1, Text: "boom", CreatedAt: time.Now().Add(time.Hour)},
		{ID: 2, ConversationID: 1, Text: "after", CreatedAt: time.Now().Add(time.Hour)}}}
	st.convs[1] = core.Conversation{ID: 1}
	rec := &panickyFollow{}
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: rec, Store: fs, Poll: 10 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)
	eventually(t, "the message after the bad one", func() bool {
		got := rec.texts()
		return len(got) > 0 && got[len(got)-1] == "after"
	})
}

type feedOnlyStore struct {
	*fakeStore
	msgs []core.Message
	set  map[string]string
}

func (s *feedOnlyStore) EnsureSetting(_ context.Context, k, v string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[string]string{}
	}
	if old, ok := s.set[k]; ok {
		return old, nil
	}
	s.set[k] = v
	return v, nil
}

func (s *feedOnlyStore) PutSetting(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[k] = v
	return nil
}

func (s *feedOnlyStore) Feed(_ context.Context, after int64, n int) ([]core.Message, error) {
	var out []core.Message
	for _, m := range s.msgs {
		if m.ID > after && len(out) < n {
			out = append(out, m)
		}
	}
	return out, nil
}
