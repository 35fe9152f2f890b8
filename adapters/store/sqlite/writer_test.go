package sqlite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// openStore opens a store for an internal test: in a temporary directory
// unless o has a Path, logging nowhere unless o has a Logger, and closed
// when the test ends (Close may also be called before).
func openStore(t *testing.T, o Options) *Store {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "kefu.db")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestBatchRollsBackOneOp runs one batch by hand: ops that append to the
// same conversation, one of which appends and then fails. The failed op's
// message and sequence number are gone, from the file and from the writer's
// conversation cache, and the others commit.
func TestBatchRollsBackOneOp(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})
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

// TestWriterGathersConcurrentWrites: writers that each wait for their
// commit before writing again still share commits, because the writer
// yields before committing a batch that is not full. The assertion is only
// that some commits were shared: how many depends on the scheduler.
func TestWriterGathersConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})
	const writers, each = 32, 20
	c0, w0 := s.commits.Load(), s.committed.Load()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(g),
					Message: core.Message{Kind: core.KindText, Text: "hi", DedupKey: fmt.Sprintf("c:%d:%d", g, i)}})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits, written := s.commits.Load()-c0, s.committed.Load()-w0
	if written != writers*each {
		t.Fatalf("%d writes committed, want %d", written, writers*each)
	}
	if commits >= written {
		t.Errorf("%d commits for %d writes: no batching", commits, written)
	}
	t.Logf("%d writes in %d commits (%.1f per commit)", written, commits, float64(written)/float64(commits))
}

// A caller that gives up while the writer runs its write learns what
// happened to it (committed: nil), not its context's error; one that gives
// up while its write still waits in the queue is told so, and the write
// never runs.
func TestGivingUpOnAWrite(t *testing.T) {
	bg := context.Background()
	s := openStore(t, Options{})
	ctx, cancel := context.WithCancel(bg)
	err := s.do(ctx, func(w *wtx) error {
		_, err := w.tx.ExecContext(w.ctx, `INSERT INTO settings (key, value) VALUES ('ran', 'v')`)
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
			_, err := w.tx.ExecContext(w.ctx, `INSERT INTO settings (key, value) VALUES ('queued', 'v')`)
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
