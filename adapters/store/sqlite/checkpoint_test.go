package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

func ingestN(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		_, err := s.Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(i%4),
			Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "c:t:" + strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func autocheckpoint(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.w.QueryRowContext(context.Background(), "PRAGMA wal_autocheckpoint").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCheckpointer: with the checkpointer on, the writer's automatic
// checkpoint is only the backstop, and committed writes get checkpointed by
// the checkpointer's own connection; Close stops it.
func TestCheckpointer(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Millisecond})
	if got := autocheckpoint(t, s); got != backstopBytes/newPageSize {
		t.Errorf("writer's wal_autocheckpoint = %d, want the backstop %d", got, backstopBytes/newPageSize)
	}
	ingestN(t, s, 40)

	// Wait (bounded) for a checkpoint that copied every frame in the WAL:
	// the writer is idle now, so the checkpointer's next run must do it.
	deadline := time.Now().Add(20 * time.Second)
	for s.ck.runs.Load() == 0 || s.ck.log.Load() == 0 || s.ck.copied.Load() != s.ck.log.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("no complete checkpoint: runs %d, log %d, copied %d", s.ck.runs.Load(), s.ck.log.Load(), s.ck.copied.Load())
		}
		s.noteWrite()
		time.Sleep(5 * time.Millisecond)
	}
	if err, _ := s.ck.lastError.Load().(error); err != nil {
		t.Errorf("checkpoint error: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.ckDone:
	default:
		t.Error("the checkpointer is still running after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func pageSize(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.w.QueryRowContext(context.Background(), "PRAGMA page_size").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPageSize: a database Open creates has newPageSize pages; one created
// with SQLite's default 4 KB pages (by an earlier kefu) keeps them and its
// data, and the WAL's thresholds, counted by SQLite in pages, are the same
// bytes in its pages.
func TestPageSize(t *testing.T) {
	s := openStore(t, Options{})
	if got := pageSize(t, s); got != newPageSize {
		t.Errorf("new database: page size %d, want %d", got, newPageSize)
	}
	if got, want := s.ck.restartAt.Load(), int64(restartBytes/newPageSize); got != want {
		t.Errorf("new database: WAL restart at %d frames, want %d", got, want)
	}

	path := filepath.Join(t.TempDir(), "old.db")
	old, err := sql.Open("sqlite", path+"?_pragma=page_size(4096)&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec("CREATE TABLE before_kefu (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Options{Path: path})
	if got := pageSize(t, s); got != 4096 {
		t.Errorf("existing database: page size %d, want 4096 kept", got)
	}
	if got, want := s.ck.restartAt.Load(), int64(restartBytes/4096); got != want {
		t.Errorf("existing database: WAL restart at %d frames, want %d", got, want)
	}
	if got, want := autocheckpoint(t, s), backstopBytes/4096; got != want {
		t.Errorf("existing database: wal_autocheckpoint %d, want %d", got, want)
	}
	ingestN(t, s, 3)
	var n int
	if err := s.w.QueryRowContext(context.Background(), "SELECT count(*) FROM before_kefu").Scan(&n); err != nil {
		t.Errorf("existing database lost its table: %v", err)
	}
}

// TestCheckpointerRewindsTheWAL: under writes that never pause, the
// checkpointer and the writer's catch-up let the WAL start over long before
// the writer's backstop would (a PASSIVE checkpoint from another connection
// alone never does: the writer has always appended more by the time it is
// done), and writes carry on.
func TestCheckpointerRewindsTheWAL(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Millisecond})
	s.ck.restartAt.Store(64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			for i := 0; ctx.Err() == nil; i++ {
				_, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(w),
					Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "c:" + strconv.Itoa(w) + ":" + strconv.Itoa(i)}})
				if err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	// The WAL rewound: a later checkpoint found fewer frames than an
	// earlier one.
	deadline := time.Now().Add(20 * time.Second)
	var most int64
	for rewound := false; !rewound; {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL never rewound: %d catch-ups, %d frames at most", s.ck.restarts.Load(), most)
		}
		if n := s.ck.log.Load(); n < most && s.ck.restarts.Load() > 0 {
			rewound = true
		} else {
			most = max(most, n)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err, _ := s.ck.lastError.Load().(error); err != nil {
		t.Errorf("checkpoint error: %v", err)
	}
	if most >= backstopBytes/newPageSize {
		t.Errorf("the WAL reached the backstop (%d frames)", most)
	}
}

// TestCheckpointerOff: a negative interval leaves checkpoints to SQLite's
// automatic one at commit, and the store works as before.
func TestCheckpointerOff(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: -1})
	if s.ckDB != nil || s.wrote != nil {
		t.Error("checkpointer started with CheckpointInterval < 0")
	}
	if got := autocheckpoint(t, s); got != 1000 {
		t.Errorf("writer's wal_autocheckpoint = %d, want SQLite's default 1000", got)
	}
	ingestN(t, s, 10)
	s.noteWrite() // must not block or panic without a checkpointer
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointFails: a checkpoint that cannot run reports an error and
// is recorded, and the checkpointer carries on until stopped.
func TestCheckpointFails(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: -1})

	bad, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	_ = bad.Close() // every query on it fails
	if err := s.checkpoint(bad); err == nil {
		t.Fatal("checkpoint on a closed connection: no error")
	}

	// The loop records the failure and keeps serving notes until stopped.
	s.wrote, s.ckDone = make(chan struct{}, 1), make(chan struct{})
	stop := make(chan struct{})
	go s.checkpointer(bad, time.Millisecond, stop)
	deadline := time.Now().Add(20 * time.Second)
	for s.ck.lastError.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the failed checkpoint was not recorded")
		}
		s.noteWrite()
		time.Sleep(time.Millisecond)
	}
	s.noteWrite()
	close(stop)
	<-s.ckDone
	if s.ck.runs.Load() != 0 {
		t.Errorf("failed checkpoints counted as runs: %d", s.ck.runs.Load())
	}
	s.wrote, s.ckDone = nil, nil
}

// TestCheckpointerLongRead: while a read transaction holds an old snapshot
// (a backup, say), the WAL is not rewound, and writes go on. (A RESTART
// checkpoint, which the checkpointer once ran, holds the write lock while
// it waits for readers: with the connection's former 10 s busy timeout,
// the writes here failed with "database is locked".)
func TestCheckpointerLongRead(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Millisecond})
	s.ck.restartAt.Store(0) // none until the reader holds its snapshot
	ingestN(t, s, 50)
	tx, err := s.r.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil || n != 50 {
		t.Fatalf("read %d messages, %v", n, err)
	}
	s.ck.restartAt.Store(64)
	for i := range 400 {
		if _, err := s.Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "x",
			Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "c:x:" + strconv.Itoa(i)}}); err != nil {
			t.Fatalf("write %d with a reader open: %v", i, err)
		}
	}
	if r := s.ck.restarts.Load(); r != 0 {
		t.Errorf("%d complete catch-ups while a reader held an old snapshot", r)
	}
}

// walRestarts reads the checkpoint sequence number in the WAL file's
// header (bytes 12-15, big-endian), which SQLite increments every time the
// WAL starts over.
func walRestarts(t *testing.T, path string) uint32 {
	t.Helper()
	h := make([]byte, 32)
	f, err := os.Open(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, h); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(h[12:16])
}

// TestCatchUpRewindsTheWAL: the writer's catch-up copies the WAL so that
// its next write starts it over; without it, writes keep appending.
func TestCatchUpRewindsTheWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kefu.db")
	s := openStore(t, Options{Path: path, CheckpointInterval: -1})
	write := func(key string) {
		t.Helper()
		if _, err := s.Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "x",
			Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: key}}); err != nil {
			t.Fatal(err)
		}
	}
	ingestN(t, s, 50) // well under SQLite's own 1,000-page checkpoint
	before := walRestarts(t, path)
	write("c:x:1")
	if got := walRestarts(t, path); got != before {
		t.Fatalf("the WAL started over on its own (%d → %d): the test cannot tell", before, got)
	}
	s.catchUp() // as the writer does between batches (it is idle here)
	if n := s.ck.restarts.Load(); n != 1 {
		t.Fatalf("catch-up: %d complete, want 1", n)
	}
	write("c:x:2")
	if got := walRestarts(t, path); got != before+1 {
		t.Errorf("after the catch-up and a write the WAL restarted %d times, want 1", got-before)
	}
	if err, _ := s.ck.lastError.Load().(error); err != nil {
		t.Errorf("checkpoint error: %v", err)
	}
}
