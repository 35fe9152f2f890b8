package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/kefuhq/kefu/core"
)

// TestBatchRollsBackOneOp runs one batch by hand: ops that append to the
// same conversation, one of which appends and then fails on its own, one
// that fails in the database (leaving the transaction in the failed state),
// one whose statement the connection has never prepared right after it, and
// one that appends a duplicate and undoes its write. The failed ops leave no
// trace and the others commit.
func TestBatchRollsBackOneOp(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{DSN: freshSchema(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v",
		Message: core.Message{Kind: core.KindText, Text: "hi", DedupKey: "c:v:1"}})
	if err != nil {
		t.Fatal(err)
	}
	id := in.Conversation.ID

	boom := errors.New("boom")
	newOp := func(fn func(w *wtx) error) *op { return &op{ctx: ctx, done: make(chan error, 1), fn: fn} }
	appendOp := func(text, key string, fail bool) *op {
		return newOp(func(w *wtx) error {
			m := core.Message{SenderKind: core.SenderAgent, Kind: core.KindText, Text: text, DedupKey: key}
			if err := s.checkMessage(&m); err != nil {
				return err
			}
			_, dup, err := w.withMsg(sqlAppend, &m, []any{id, false}, new(int64))
			if err != nil {
				return err
			}
			if dup {
				w.undo()
				_, found, err := w.byDedup(key)
				if err != nil || !found {
					return fmt.Errorf("duplicate not found: %v", err)
				}
				return nil
			}
			if fail {
				return boom
			}
			return nil
		})
	}
	dbFail := newOp(func(w *wtx) error {
		_, err := w.exec(`INSERT INTO settings (key, value) VALUES ('k', NULL)`) // NOT NULL
		return dbErr(err, "bad insert")
	})
	fresh := newOp(func(w *wtx) error {
		var n int
		return w.queryRow(`SELECT 41 + 1 /* never prepared before */`).Scan(&n)
	})
	batch := []*op{appendOp("a", "", false), appendOp("lost", "", true), dbFail, fresh,
		appendOp("dup", "c:v:1", false), appendOp("b", "", false), dbFail}
	errs := make([]error, len(batch))
	s.mu.Lock() // the writer goroutine is idle; keep Close out while the batch runs
	s.commit(batch, errs)
	s.mu.Unlock()
	for i, want := range []error{nil, boom, core.ErrInvalid, nil, nil, nil, core.ErrInvalid} {
		if !errors.Is(errs[i], want) {
			t.Errorf("op %d: %v, want %v", i, errs[i], want)
		}
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
	if fmt.Sprint(got) != "[hi a b]" {
		t.Errorf("messages %q, want hi a b", got)
	}
	next, err := s.Append(ctx, core.Append{ConversationID: id,
		Message: core.Message{SenderKind: core.SenderAgent, Kind: core.KindText, Text: "c"}})
	if err != nil || next.Message.Seq != 4 {
		t.Fatalf("next append = %+v, %v", next.Message, err)
	}
}
