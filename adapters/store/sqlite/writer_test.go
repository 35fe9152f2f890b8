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

	"github.com/kefuhq/kefu/core"
)

// TestBatchRollsBackOneOp runs one batch by hand: ops that append to the
// same conversation, one of which appends and then fails. The failed op's
// message and sequence number are gone, from the file and from the writer's
// conversation cache, and the others commit.
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
