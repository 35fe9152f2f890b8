package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

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
	dbFail := func() *op {
		return newOp(func(w *wtx) error {
			_, err := w.exec(`INSERT INTO settings (key, value) VALUES ('k', NULL)`) // NOT NULL
			return dbErr(err, "bad insert")
		})
	}
	fresh := newOp(func(w *wtx) error {
		var n int
		return w.queryRow(`SELECT 41 + 1 /* never prepared before */`).Scan(&n)
	})
	batch := []*op{appendOp("a", "", false), appendOp("lost", "", true), dbFail(), fresh,
		appendOp("dup", "c:v:1", false), appendOp("b", "", false), dbFail()}
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

// A caller that gives up while the writer runs its write learns what
// happened to it (committed: nil), not its context's error; one that gives
// up while its write still waits in the queue is told so, and the write
// never runs.
func TestGivingUpOnAWrite(t *testing.T) {
	bg := context.Background()
	s, err := Open(context.Background(), Options{DSN: freshSchema(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx, cancel := context.WithCancel(bg)
	err = s.do(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO settings (key, value) VALUES ('ran', 'v')`)
		cancel() // the caller gives up while its write runs
		return err
	})
	if err != nil {
		t.Fatalf("a write given up on while it ran, and committed: do = %v, want nil", err)
	}
	if v, err := s.Setting(bg, "ran"); err != nil || v != "v" {
		t.Fatalf("the write: %q, %v", v, err)
	}

	// The writer busy with a write that waits; a second one queued behind it.
	running, release, first := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() { first <- s.do(bg, func(*wtx) error { close(running); <-release; return nil }) }()
	<-running
	ctx2, cancel2 := context.WithCancel(bg)
	second := make(chan error, 1)
	go func() {
		second <- s.do(ctx2, func(w *wtx) error {
			_, err := w.exec(`INSERT INTO settings (key, value) VALUES ('queued', 'v')`)
			return err
		})
	}()
	for len(s.ops) == 0 { // wait until it is queued
		time.Sleep(time.Millisecond)
	}
	cancel2()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("a write given up on in the queue: do = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := s.PutSetting(bg, "after", "v"); err != nil { // the queue has moved past it
		t.Fatal(err)
	}
	if _, err := s.Setting(bg, "queued"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("the write given up on in the queue ran: %v", err)
	}
}
