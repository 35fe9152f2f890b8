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

// TestWALCommitIsOneWrite: the frames of a commit reach the WAL file in one
// write, where SQLite makes two per frame.
func TestWALCommitIsOneWrite(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})
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
	if in < 4 || out != 1 {
		t.Errorf("one commit: SQLite wrote the WAL %d times, the file was written %d times; want at least 4 and 1", in, out)
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

// copiedMessages copies the database and its WAL (not the shared-memory
// index, so SQLite recovers the WAL as after a crash), checks the copy's
// integrity and returns its number of messages.
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
