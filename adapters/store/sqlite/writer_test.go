package sqlite

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/kefuhq/kefu/core"
)

// TestBatchRollsBackOneOp runs one batch by hand: ops that append to the
// same conversation, one of which appends and then fails. The failed op's
// message and sequence number are gone, from the file and from the writer's
// conversation cache, and the others commit.
func TestBatchRollsBackOneOp(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v",
		Message: core.Message{Kind: core.KindText, Text: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	id := in.Conversation.ID

	boom := errors.New("boom")
	appendOp := func(text string, fail bool) *op {
		return &op{ctx: ctx, done: make(chan error, 1), fn: func(w *wtx) error {
			c, err := w.conv(id)
			if err != nil {
				return err
			}
			m := core.Message{SenderKind: core.SenderAgent, Kind: core.KindText, Text: text}
			if err := s.checkMessage(&m); err != nil {
				return err
			}
			if err := w.appendMsg(&c, &m); err != nil {
				return err
			}
			if fail {
				return boom
			}
			return nil
		}}
	}
	// The writer goroutine is idle (nothing is submitted), so running a
	// batch here is the only use of the writer connection and the cache.
	batch := []*op{appendOp("a", false), appendOp("lost", true), appendOp("b", false), appendOp("lost too", true)}
	errs := make([]error, len(batch))
	s.commit(batch, errs)
	for i, want := range []error{nil, boom, nil, boom} {
		if !errors.Is(errs[i], want) {
			t.Errorf("op %d: %v, want %v", i, errs[i], want)
		}
	}
	// A later append (through the cache) continues the sequence.
	next, err := s.Append(ctx, core.Append{ConversationID: id,
		Message: core.Message{SenderKind: core.SenderAgent, Kind: core.KindText, Text: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := s.Messages(ctx, core.MessageQuery{ConversationID: id})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, m := range ms {
		if m.Seq != int64(i+1) {
			t.Errorf("message %q has seq %d, want %d", m.Text, m.Seq, i+1)
		}
		got = append(got, m.Text)
	}
	if len(got) != 4 || got[1] != "a" || got[2] != "b" || got[3] != "c" || next.Message.Seq != 4 {
		t.Errorf("messages %q, next seq %d", got, next.Message.Seq)
	}
	if c, err := s.Conversation(ctx, id); err != nil || c.LastSeq != 4 {
		t.Errorf("conversation = %+v, %v", c, err)
	}
}
