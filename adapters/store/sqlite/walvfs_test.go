//go:build linux

package sqlite

import (
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kefuhq/kefu/core"
)

// TestWALFrameIsOneWrite: each frame of a commit reaches the WAL file in
// one write, where SQLite makes two (header and page).
func TestWALFrameIsOneWrite(t *testing.T) {
	ctx := context.Background()
	// No background checkpointer: one that copied the whole WAL between the
	// two writes would make the second restart it with a header write.
	s := openStore(t, Options{CheckpointInterval: -1})
	ingest := func(text string) {
		t.Helper()
		if _, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v",
			Message: core.Message{Kind: core.KindText, Text: text}}); err != nil {
			t.Fatal(err)
		}
	}
	ingest("hello")
	in, out := walWritesIn.Load(), walWritesOut.Load()
	ingest("hello again")
	in, out = walWritesIn.Load()-in, walWritesOut.Load()-out
	if out < 2 || in != 2*out {
		t.Errorf("one commit: SQLite wrote the WAL %d times, the file was written %d times; want twice as many, for at least 2 frames", in, out)
	}
}

// TestWALCopiedAfterEveryCommit: as soon as a write returns, the database
// and WAL files hold it whole: a copy of them, recovered by SQLite from the
// WAL as after a crash, has every message committed so far and passes the
// integrity check. Commits of one small write, of many writes together, of
// more than the buffer holds, and transactions bigger than the page cache
// (which spill frames before their commit and rewrite them) are all checked.
func TestWALCopiedAfterEveryCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// No background checkpointer: between writes nothing touches the files.
	s := openStore(t, Options{Path: filepath.Join(dir, "kefu.db"), CheckpointInterval: -1})
	var (
		mu    sync.Mutex
		count int
	)
	ingest := func(id, text string) {
		if _, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: id,
			Message: core.Message{Kind: core.KindText, Text: text}}); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		count++
		mu.Unlock()
	}
	check := func(step string) {
		t.Helper()
		if n := copiedMessages(t, filepath.Join(dir, "kefu.db")); n != count {
			t.Fatalf("%s: the copy has %d messages, %d were committed", step, n, count)
		}
	}

	for i := range 20 {
		ingest("v"+strconv.Itoa(i%3), "message "+strconv.Itoa(i))
		check("small commit " + strconv.Itoa(i))
	}
	concurrent := func(step string, size int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() { ingest("w"+strconv.Itoa(i%50), strings.Repeat(strconv.Itoa(i%10), size)) })
		}
		wg.Wait()
		check(step)
	}
	for _, size := range []int{100, 3000, 20000} {
		concurrent("concurrent writes of "+strconv.Itoa(size)+" bytes", size)
	}
	// A page cache of 16 pages: transactions spill frames to the WAL before
	// their commit, and SQLite rewrites frames in place and their
	// checksums when it changes a spilled page again.
	if _, err := s.w.ExecContext(ctx, "PRAGMA cache_size = 16"); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{100, 3000} {
		concurrent("spilling transactions, "+strconv.Itoa(size)+" bytes", size)
	}
}

// TestWALWriteFailure: writes that fail as on a full disk, in small commits
// and in transactions that spill frames before their commit, fail the writes
// they belong to and nothing else: the store goes on once the disk has room,
// and the files hold every write that succeeded, intact.
func TestWALWriteFailure(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, Options{Path: filepath.Join(dir, "kefu.db"), CheckpointInterval: -1})
	t.Cleanup(func() { walFailFrom.Store(0) })
	var (
		mu             sync.Mutex
		stored, failed int
	)
	ingest := func(id, text string) {
		_, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: id,
			Message: core.Message{Kind: core.KindText, Text: text}})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
		} else {
			stored++
		}
	}
	round := func(step string, size int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() { ingest("w"+strconv.Itoa(i%30), strings.Repeat("x", size)) })
		}
		wg.Wait()
		// A write whose commit failed may still be queued for the writer
		// when its caller gives up, so the count comes after a quiet write.
		walFailFrom.Store(0)
		ingest("quiet", "after "+step)
		if n := copiedMessages(t, filepath.Join(dir, "kefu.db")); n != stored {
			t.Fatalf("%s: the copy has %d messages, %d writes succeeded", step, n, stored)
		}
	}

	ingest("v", "before")
	walFailFrom.Store(walWritesOut.Load() + 1)
	ingest("v", "on a full disk")
	if failed != 1 {
		t.Fatalf("a write on a full disk succeeded")
	}
	round("a small commit failed", 10)

	if _, err := s.w.ExecContext(ctx, "PRAGMA cache_size = 16"); err != nil {
		t.Fatal(err)
	}
	for _, after := range []int64{5, 40, 200} {
		failed = 0
		walFailFrom.Store(walWritesOut.Load() + after)
		round("spilling transactions, failing after "+strconv.Itoa(int(after))+" writes", 3000)
		if failed == 0 {
			t.Errorf("failing after %d writes: no write failed", after)
		}
	}
}

// copiedMessages copies the database and its WAL (not the shared-memory
// index, so SQLite recovers the WAL as after a crash), checks the copy's
// integrity and returns its number of messages.
// TestWALPaddedFrames: with synchronous=FULL and without power-safe
// overwrite (psow=0), SQLite pads each commit with copies of its last frame
// up to a 4 KB boundary and splits the frame that crosses it around a sync;
// the piece after the sync can be 24 bytes long, like a frame header. Every
// commit must still be in the file whole when it returns: the WAL a whole
// number of frames long, and every row readable, intact, by another
// connection through the plain unix VFS.
func TestWALPaddedFrames(t *testing.T) {
	vfs, err := registerWALVFS()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "padded.db")
	if _, err := createFile(t.Context(), path); err != nil { // 1 KB pages, WAL
		t.Fatal(err)
	}
	w, err := sql.Open("sqlite", "file:"+path+"?vfs="+vfs+"&psow=0&_pragma=synchronous(FULL)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	row := func(id int) string { return strings.Repeat(strconv.Itoa(id%10), 120) }
	const frame = 1024 + walFrameHeader
	for id := 1; id <= 1200; id++ { // past frames 469 and 981, whose tails are 24 bytes
		if _, err := w.Exec("INSERT INTO t VALUES (?, ?)", id, row(id)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		if (fi.Size()-32)%frame != 0 {
			t.Fatalf("after the commit of row %d the WAL is %d bytes: %d of a frame missing", id, fi.Size(), frame-(fi.Size()-32)%frame)
		}
		if id%50 == 0 {
			var n, bad int
			if err := r.QueryRow("SELECT count(*), count(*) FILTER (WHERE x <> substr(replace(printf('%0120d', 0), '0', id % 10), 1, 120)) FROM t").Scan(&n, &bad); err != nil || n != id || bad != 0 {
				t.Fatalf("after row %d, another connection reads %d rows, %d wrong (%v)", id, n, bad, err)
			}
		}
	}
}

func copiedMessages(t *testing.T, path string) int {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, path+suffix, dst+suffix)
	}
	db, err := sql.Open("sqlite", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity check of the copy: %q, %v", ok, err)
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
