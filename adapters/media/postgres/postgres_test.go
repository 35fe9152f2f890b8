package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/adapters/media/local"
	mediapg "github.com/kefuhq/kefu/adapters/media/postgres"
	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/media/mediatest"
)

const key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.bin"

// migrated returns the DSN of a fresh schema that the PostgreSQL store has
// migrated, as kefu serve does before it opens the media backend.
func migrated(t *testing.T) string {
	t.Helper()
	dsn := testenv.PostgresSchema(t)
	s, err := postgres.Open(context.Background(), postgres.Options{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func open(t *testing.T, o mediapg.Options) *mediapg.Backend {
	t.Helper()
	b, err := mediapg.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// sqlConn is a plain connection to look at and tamper with the tables.
func sqlConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestContract runs the media.Backend contract suite with the default part
// size (most objects fit in one part) and with 1000-byte parts (every
// object but the smallest is written part by part), each subtest on empty
// tables.
func TestContract(t *testing.T) {
	for _, partSize := range []int{0, 1000} {
		t.Run(fmt.Sprintf("part%d", partSize), func(t *testing.T) {
			dsn := migrated(t)
			c := sqlConn(t, dsn)
			mediatest.Run(t, func(t *testing.T) media.Backend {
				exec(t, c, `TRUNCATE media_objects, media_parts, media_blobs`)
				b := open(t, mediapg.Options{DSN: dsn, PartSize: partSize})
				t.Cleanup(func() {
					// Whatever a subtest did, at most one blob per key is live
					// and media_objects names exactly the live ones.
					if n := count(t, c, `SELECT count(*) FROM media_blobs b FULL JOIN media_objects o
						ON o.blob = b.blob WHERE (b.state = 'live') IS DISTINCT FROM (o.key IS NOT NULL)`); n != 0 {
						t.Errorf("%d blobs live without a key or named while not live", n)
					}
					if n := count(t, c, `SELECT count(*) FROM media_blobs WHERE state = 'writing'`); n != 0 {
						t.Errorf("%d unfinished blobs left behind", n)
					}
				})
				return b
			})
		})
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	data := make([]byte, n)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	return data
}

func readAll(t *testing.T, b media.Backend, key string) []byte {
	t.Helper()
	rc, n, err := b.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != n {
		t.Fatalf("Open says %d bytes, read %d", n, len(data))
	}
	return data
}

// A file of many default-size parts goes in and comes back whole, its
// parts stored at the part size, and ranges read across part boundaries.
func TestLargeObject(t *testing.T) {
	dsn := migrated(t)
	b := open(t, mediapg.Options{DSN: dsn})
	data := randomBytes(t, 9*mediapg.DefaultPartSize+12345)
	if err := b.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, key); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes that differ from the %d written", len(got), len(data))
	}
	c := sqlConn(t, dsn)
	if n := count(t, c, `SELECT count(*) FROM media_parts p JOIN media_objects o ON o.blob = p.blob
		WHERE o.key = $1 AND length(p.data) = $2`, key, mediapg.DefaultPartSize); n != 9 {
		t.Errorf("%d full parts, want 9", n)
	}

	rc, _, err := b.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rs := rc.(io.ReadSeeker)
	for _, tc := range []struct {
		name   string
		offset int64
		whence int
		at     int64
		n      int
	}{
		{"across a boundary", mediapg.DefaultPartSize - 10, io.SeekStart, mediapg.DefaultPartSize - 10, 30},
		{"backwards", 5, io.SeekStart, 5, 100},
		{"from the current position", 2 * mediapg.DefaultPartSize, io.SeekCurrent, 2*mediapg.DefaultPartSize + 105, 1000},
		{"the tail", -7, io.SeekEnd, int64(len(data)) - 7, 7},
	} {
		pos, err := rs.Seek(tc.offset, tc.whence)
		if err != nil || pos != tc.at {
			t.Fatalf("%s: Seek = %d, %v; want %d", tc.name, pos, err, tc.at)
		}
		buf := make([]byte, tc.n)
		if _, err := io.ReadFull(rs, buf); err != nil || !bytes.Equal(buf, data[tc.at:tc.at+int64(tc.n)]) {
			t.Fatalf("%s: read %v, or the bytes differ", tc.name, err)
		}
	}
	if _, err := rs.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if n, err := rs.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read at the end = %d, %v; want io.EOF", n, err)
	}
	if _, err := rs.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek to a negative position succeeded")
	}
	if _, err := rs.Seek(0, 42); err == nil {
		t.Error("Seek with a bad whence succeeded")
	}
}

// Concurrent Puts of one key, each of several parts: one whole version
// wins, exactly one blob stays live and the others are dropped.
func TestConcurrentPutOneKey(t *testing.T) {
	dsn := migrated(t)
	b := open(t, mediapg.Options{DSN: dsn, PartSize: 4096})
	versions := map[string]bool{}
	var list [][]byte
	for range 6 {
		v := randomBytes(t, 5*4096+100)
		versions[string(v)] = true
		list = append(list, v)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(list))
	for _, v := range list {
		wg.Go(func() { errs <- b.Put(context.Background(), key, bytes.NewReader(v)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, b, key); !versions[string(got)] {
		t.Fatalf("read %d bytes that are no version written", len(got))
	}
	c := sqlConn(t, dsn)
	if n := count(t, c, `SELECT count(*) FROM media_blobs WHERE key = $1 AND state = 'live'`, key); n != 1 {
		t.Errorf("%d live blobs, want 1", n)
	}
	if n := count(t, c, `SELECT count(*) FROM media_blobs WHERE key = $1 AND state = 'dropped'`, key); n != len(list)-1 {
		t.Errorf("%d dropped blobs, want %d", n, len(list)-1)
	}
}

// Delete keeps the bytes for readers opened before, until a sweep after
// the read grace; such a reader then fails plainly rather than returning a
// short file. Sweeps also remove unfinished writes left by a crash, and
// never a live object.
func TestSweep(t *testing.T) {
	dsn := migrated(t)
	b := open(t, mediapg.Options{DSN: dsn, PartSize: 1000})
	c := sqlConn(t, dsn)
	ctx := context.Background()
	data := randomBytes(t, 3500)
	const other = "ffff0000000000000000000000000000.bin"
	for _, k := range []string{key, other} {
		if err := b.Put(ctx, k, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	early, _, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	late, _, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if err := b.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(early); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reader opened before Delete: %d bytes, %v", len(got), err)
	}
	// A sweep within the grace keeps the bytes.
	if n, err := b.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep within the grace = %d, %v; want 0", n, err)
	}
	// A crashed upload, a day old, and one in progress.
	exec(t, c, `INSERT INTO media_blobs (key, state, part_size, changed_at) VALUES
		('aaaa0000.bin', 'writing', 1000, now() - interval '25 hours'),
		('bbbb0000.bin', 'writing', 1000, now())`)
	exec(t, c, `INSERT INTO media_parts (blob, part, data) SELECT blob, 0, '\x00' FROM media_blobs WHERE state = 'writing'`)
	// The grace passes (on the database's clock, which the sweep reads).
	exec(t, c, `UPDATE media_blobs SET changed_at = now() - interval '2 hours' WHERE state = 'dropped'`)
	if n, err := b.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 (the deleted object and the crashed upload)", n, err)
	}
	if n := count(t, c, `SELECT count(*) FROM media_blobs WHERE key IN ($1, 'aaaa0000.bin')`, key); n != 0 {
		t.Errorf("%d swept blobs remain", n)
	}
	if n := count(t, c, `SELECT count(*) FROM media_parts p JOIN media_blobs b ON b.blob = p.blob
		WHERE b.key = 'bbbb0000.bin'`); n != 1 {
		t.Errorf("the upload in progress lost its part")
	}
	if got := readAll(t, b, other); !bytes.Equal(got, data) {
		t.Error("a live object changed in the sweep")
	}
	// late has read only the part Open fetched: the next part is gone.
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(late, buf); err != nil {
		t.Fatal(err)
	}
	if n, err := late.Read(buf); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("read after the sweep = %d, %v; want an error saying the part is gone", n, err)
	}
}

// A Put whose unfinished parts are swept (it took longer than StaleWrite)
// fails and stores nothing.
func TestPutOutlivedBySweep(t *testing.T) {
	dsn := migrated(t)
	b := open(t, mediapg.Options{DSN: dsn, PartSize: 1000})
	c := sqlConn(t, dsn)
	r := &hookReader{r: bytes.NewReader(randomBytes(t, 5000)), at: 2500, hook: func() {
		exec(t, c, `DELETE FROM media_blobs WHERE state = 'writing'`)
	}}
	err := b.Put(context.Background(), key, r)
	if err == nil {
		t.Fatal("Put succeeded after its parts were deleted")
	}
	if _, _, err := b.Open(context.Background(), key); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Open = %v; want ErrNotFound", err)
	}
	if n := count(t, c, `SELECT count(*) FROM media_blobs`); n != 0 {
		t.Errorf("%d blobs left", n)
	}
}

// hookReader calls hook once, when at bytes have been read.
type hookReader struct {
	r    io.Reader
	at   int
	n    int
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.hook != nil && h.n >= h.at {
		h.hook()
		h.hook = nil
	}
	n, err := h.r.Read(p[:min(len(p), 500)])
	h.n += n
	return n, err
}

// A missing key is the same error as with the local backend: one wrapping
// core.ErrNotFound, from Open and from Delete.
func TestMissingLikeLocal(t *testing.T) {
	lb, err := local.New(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	pb := open(t, mediapg.Options{DSN: migrated(t)})
	ctx := context.Background()
	for name, b := range map[string]media.Backend{"local": lb, "postgres": pb} {
		if _, _, err := b.Open(ctx, key); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s: Open(missing) = %v", name, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s: Delete(missing) = %v", name, err)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		o    mediapg.Options
	}{
		{"no DSN", mediapg.Options{}},
		{"negative part size", mediapg.Options{DSN: "postgres://x", PartSize: -1}},
		{"huge part size", mediapg.Options{DSN: "postgres://x", PartSize: mediapg.MaxPartSize + 1}},
		{"negative grace", mediapg.Options{DSN: "postgres://x", ReadGrace: -time.Second}},
		{"negative stale write", mediapg.Options{DSN: "postgres://x", StaleWrite: -time.Second}},
		{"malformed DSN", mediapg.Options{DSN: "postgres://x:bad port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := mediapg.Open(ctx, tc.o); !errors.Is(err, core.ErrInvalid) {
				if b != nil {
					_ = b.Close()
				}
				t.Fatalf("Open = %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("no media tables", func(t *testing.T) {
		b, err := mediapg.Open(ctx, mediapg.Options{DSN: testenv.PostgresSchema(t)})
		if err == nil {
			_ = b.Close()
			t.Fatal("Open succeeded on a schema the store never migrated")
		}
		if !strings.Contains(err.Error(), "store.driver postgres") {
			t.Errorf("error does not say what to do: %v", err)
		}
	})
}

func TestClosed(t *testing.T) {
	b := open(t, mediapg.Options{DSN: migrated(t), PartSize: 1000})
	ctx := context.Background()
	if err := b.Put(ctx, key, bytes.NewReader(randomBytes(t, 3000))); err != nil {
		t.Fatal(err)
	}
	rc, _, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := b.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
	if _, _, err := b.Open(ctx, key); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Open after Close = %v", err)
	}
	if err := b.Delete(ctx, key); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Delete after Close = %v", err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, core.ErrClosed) {
		t.Errorf("reading past the first part after Close = %v", err)
	}
}
