package bridge_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/fakeclock"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// eventually polls cond until it holds, failing after a generous bound. The
// bound is for failing, not a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeClock is a bridge.Clock that moves only when told to.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock {
	return fakeclock.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
}

// fakeStore implements the outbox part of core.Store in memory. Calling any
// other method panics (the embedded interface is nil).
type fakeStore struct {
	core.Store

	mu        sync.Mutex
	lastID    int64
	entries   map[int64]core.OutboxEntry
	messages  map[int64]core.Message
	convs     map[int64]core.Conversation
	headReads map[string]int // OutboxHead calls per key
	finished  []int64        // FinishOutbox calls, in order
	outboxes  int            // Outbox calls (sweeps)
	// failFinish makes the next FinishOutbox calls fail.
	failFinish int
	appended   []core.Message // Append calls (delivery_failed events)
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		entries:   map[int64]core.OutboxEntry{},
		messages:  map[int64]core.Message{},
		convs:     map[int64]core.Conversation{},
		headReads: map[string]int{},
	}
}

func (s *fakeStore) id() int64 { s.lastID++; return s.lastID }

// Append records an appended message, once per dedup key.
func (s *fakeStore) Append(_ context.Context, a core.Append) (core.Appended, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.appended {
		if a.Message.DedupKey != "" && m.DedupKey == a.Message.DedupKey {
			return core.Appended{Conversation: s.convs[a.ConversationID], Message: m, Duplicate: true}, nil
		}
	}
	m := a.Message
	m.ID, m.ConversationID = s.id(), a.ConversationID
	s.appended = append(s.appended, m)
	return core.Appended{Conversation: s.convs[a.ConversationID], Message: m}, nil
}

// MessageByDedup finds an appended message by its dedup key.
func (s *fakeStore) MessageByDedup(_ context.Context, key string) (core.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.appended {
		if m.DedupKey == key {
			return m, nil
		}
	}
	return core.Message{}, core.ErrNotFound
}

// appendedMessages returns what Append recorded.
func (s *fakeStore) appendedMessages() []core.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]core.Message(nil), s.appended...)
}

// addReply stores an agent reply in conversation conv (created on first
// use) and an outbox entry for it, keyed by the conversation, due at now.
func (s *fakeStore) addReply(channel string, conv int64, text string, now time.Time) core.OutboxEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[conv]
	if !ok {
		c = core.Conversation{ID: conv, Channel: channel, ExternalID: fmt.Sprintf("customer-%d", conv), Status: core.StatusOpen}
	}
	c.LastSeq++
	s.convs[conv] = c
	m := core.Message{ID: s.id(), ConversationID: conv, Seq: c.LastSeq, SenderKind: core.SenderAgent, SenderID: 1,
		Visibility: core.Public, Kind: core.KindText, Text: text, Status: core.MsgPending, CreatedAt: now}
	s.messages[m.ID] = m
	e := core.OutboxEntry{ID: s.id(), Channel: channel, Key: fmt.Sprintf("c:%d", conv), MessageID: m.ID,
		NextAttemptAt: now, CreatedAt: now}
	s.entries[e.ID] = e
	return e
}

// addPayload stores a payload entry.
func (s *fakeStore) addPayload(channel, key string, payload []byte, now time.Time) core.OutboxEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := core.OutboxEntry{ID: s.id(), Channel: channel, Key: key, Payload: payload, NextAttemptAt: now, CreatedAt: now}
	s.entries[e.ID] = e
	return e
}

func (s *fakeStore) entry(id int64) (core.OutboxEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	return e, ok
}

func (s *fakeStore) message(id int64) core.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messages[id]
}

func (s *fakeStore) heads(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headReads[key]
}

func (s *fakeStore) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries) == 0
}

func (s *fakeStore) OutboxEntry(_ context.Context, id int64) (core.OutboxEntry, error) {
	if e, ok := s.entry(id); ok {
		return e, nil
	}
	return core.OutboxEntry{}, core.ErrNotFound
}

func (s *fakeStore) OutboxHead(_ context.Context, channel, key string) (core.OutboxEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.headReads[key]++
	var head core.OutboxEntry
	for _, e := range s.entries {
		if e.Channel == channel && e.Key == key && (head.ID == 0 || e.ID < head.ID) {
			head = e
		}
	}
	if head.ID == 0 {
		return head, core.ErrNotFound
	}
	return head, nil
}

func (s *fakeStore) sweeps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outboxes
}

func (s *fakeStore) Outbox(_ context.Context, channel string, now time.Time, limit int) ([]core.OutboxEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outboxes++
	heads := map[[2]string]core.OutboxEntry{} // core.Store: the head of each key only
	for _, e := range s.entries {
		k := [2]string{e.Channel, e.Key}
		if h, ok := heads[k]; (channel == "" || e.Channel == channel) && (!ok || e.ID < h.ID) {
			heads[k] = e
		}
	}
	var out []core.OutboxEntry
	for _, e := range heads {
		if !e.NextAttemptAt.After(now) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b core.OutboxEntry) int { return cmp.Compare(a.ID, b.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *fakeStore) RetryOutbox(_ context.Context, id int64, next time.Time, lastErr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return core.ErrNotFound
	}
	e.Attempts++
	e.NextAttemptAt = next
	e.LastError = lastErr
	s.entries[id] = e
	return nil
}

func (s *fakeStore) FinishOutbox(_ context.Context, id int64, u *core.StatusUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failFinish > 0 {
		s.failFinish--
		return errors.New("database is locked")
	}
	if _, ok := s.entries[id]; !ok {
		return core.ErrNotFound
	}
	delete(s.entries, id)
	s.finished = append(s.finished, id)
	if u != nil {
		m := s.messages[u.MessageID]
		if m.Status.Advances(u.Status) {
			m.Status = u.Status
			if u.Status == core.MsgFailed {
				m.FailReason = u.Reason
			}
			if u.ExternalID != "" {
				m.ExternalID = u.ExternalID
			}
			s.messages[u.MessageID] = m
		}
	}
	return nil
}

func (s *fakeStore) Message(_ context.Context, id int64) (core.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.messages[id]; ok {
		return m, nil
	}
	return core.Message{}, core.ErrNotFound
}

func (s *fakeStore) Conversation(_ context.Context, id int64) (core.Conversation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.convs[id]; ok {
		return c, nil
	}
	return core.Conversation{}, core.ErrNotFound
}

// recordingNotifier is a core.Notifier that keeps what it is told.
type recordingNotifier struct {
	mu      sync.Mutex
	updates []core.Update
	entries []core.OutboxEntry
}

func (n *recordingNotifier) Publish(_ context.Context, updates ...core.Update) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updates = append(n.updates, updates...)
}

func (n *recordingNotifier) Deliver(_ context.Context, e core.OutboxEntry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.entries = append(n.entries, e)
}

func (n *recordingNotifier) statuses() []core.Update {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []core.Update
	for _, u := range n.updates {
		if u.Type == core.UpdateStatus {
			out = append(out, u)
		}
	}
	return out
}

var (
	_ core.Store    = (*fakeStore)(nil)
	_ core.Notifier = (*recordingNotifier)(nil)
)
