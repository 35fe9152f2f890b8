// Package mediatest is the contract suite for media.Backend: every backend
// runs Run against fresh backends of its own and must pass all of it.
//
//	func TestContract(t *testing.T) {
//		mediatest.Run(t, func(t *testing.T) media.Backend {
//			b, err := mybackend.New(…)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { b.Close() })
//			return b
//		})
//	}
package mediatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Run runs the contract suite. open returns a fresh, empty backend for one
// subtest and arranges for it to be released when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) media.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b media.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"Replace", testReplace},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"FailedPutStoresNothing", testFailedPut},
		{"FailedPutKeepsPrevious", testFailedPutKeepsPrevious},
		{"CancelledPut", testCancelledPut},
		{"BadKeys", testBadKeys},
		{"InvisibleUntilDone", testInvisibleUntilDone},
		{"ConcurrentReplace", testConcurrentReplace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// Keys that every backend accepts.
const (
	keyA = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.png"
	keyB = "0a1bffffffffffffffffffffffffffff.preview.jpg"
)

// BadKeys are keys every backend must refuse with core.ErrInvalid.
var BadKeys = []string{
	"", "a", "abcd", "../x", "../../etc/passwd", "/etc/passwd", "/abs/olute",
	"ab/cd/ef", `ab\cd\ef`, "abcd/../../x", ".hidden", "..abcd", "ab..cd", "abcd..",
	"abcd/", "ABCDEF", "abcd e", "abcd\x00e", "abcd\ne", "ab.cd", "a-bcd", "abcd%2f..",
	"abcdé", "c:abcd", "abcd:e", "abcd*", strings.Repeat("a", 129),
}

func put(t *testing.T, b media.Backend, key, data string) {
	t.Helper()
	if err := b.Put(context.Background(), key, strings.NewReader(data)); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

// read returns the object under key, checking the size Open reports.
func read(t *testing.T, b media.Backend, key string) (string, error) {
	t.Helper()
	rc, n, err := b.Open(context.Background(), key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if int64(len(data)) != n {
		t.Fatalf("Open(%s) size %d, read %d bytes", key, n, len(data))
	}
	return string(data), nil
}

func wantNotFound(t *testing.T, b media.Backend, key string) {
	t.Helper()
	if data, err := read(t, b, key); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Open(%s) = %q, %v; want ErrNotFound", key, data, err)
	}
}

func wantContent(t *testing.T, b media.Backend, key, want string) {
	t.Helper()
	got, err := read(t, b, key)
	if err != nil {
		t.Fatalf("Open(%s): %v", key, err)
	}
	if got != want {
		t.Fatalf("Open(%s) = %d bytes %.20q…, want %d bytes %.20q…", key, len(got), got, len(want), want)
	}
}

func testRoundTrip(t *testing.T, b media.Backend) {
	put(t, b, keyA, "hello")
	put(t, b, keyB, "preview")
	wantContent(t, b, keyA, "hello")
	wantContent(t, b, keyB, "preview")
}

func testEmpty(t *testing.T, b media.Backend) {
	put(t, b, keyA, "")
	wantContent(t, b, keyA, "")
}

func testLarge(t *testing.T, b media.Backend) {
	data := strings.Repeat("0123456789abcdef", 300<<10/16+7) // > 300 KiB, not a power of two
	put(t, b, keyA, data)
	wantContent(t, b, keyA, data)
	rc, _, err := b.Open(context.Background(), keyA)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if s, ok := rc.(io.Seeker); ok { // optional capability: it must work when offered
		if _, err := s.Seek(16, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(rc, buf); err != nil || string(buf) != "0123" {
			t.Fatalf("after Seek(16): %q, %v", buf, err)
		}
	}
}

func testReplace(t *testing.T, b media.Backend) {
	put(t, b, keyA, "first version, longer")
	put(t, b, keyA, "second")
	wantContent(t, b, keyA, "second")
}

func testMissing(t *testing.T, b media.Backend) {
	wantNotFound(t, b, keyA)
	if err := b.Delete(context.Background(), keyA); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Delete(missing) = %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, b media.Backend) {
	put(t, b, keyA, "x")
	put(t, b, keyB, "y")
	// A reader opened before Delete may finish reading.
	rc, _, err := b.Open(context.Background(), keyA)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := b.Delete(context.Background(), keyA); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, b, keyA)
	wantContent(t, b, keyB, "y")
	if data, err := io.ReadAll(rc); err != nil || string(data) != "x" {
		t.Fatalf("reader opened before Delete: %q, %v", data, err)
	}
	if err := b.Delete(context.Background(), keyA); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	n   int
	err error
}

var errBroken = errors.New("connection reset by test")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func testFailedPut(t *testing.T, b media.Backend) {
	err := b.Put(context.Background(), keyA, &failingReader{n: 100 << 10, err: errBroken})
	if !errors.Is(err, errBroken) {
		t.Fatalf("Put with failing reader = %v, want it to wrap the reader's error", err)
	}
	wantNotFound(t, b, keyA)
}

func testFailedPutKeepsPrevious(t *testing.T, b media.Backend) {
	put(t, b, keyA, "old")
	if err := b.Put(context.Background(), keyA, &failingReader{n: 10, err: errBroken}); err == nil {
		t.Fatal("Put with failing reader succeeded")
	}
	wantContent(t, b, keyA, "old")
}

// cancellingReader cancels its context after yielding some bytes, and goes
// on yielding.
type cancellingReader struct {
	cancel context.CancelFunc
	n      int
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	c.n += len(p)
	if c.n > 1000 {
		c.cancel()
	}
	if c.n > 1<<20 {
		return 0, io.EOF
	}
	return len(p), nil
}

func testCancelledPut(t *testing.T, b media.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, keyA, strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx = %v, want context.Canceled", err)
	}
	wantNotFound(t, b, keyA)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if err := b.Put(ctx, keyA, &cancellingReader{cancel: cancel}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled midway = %v, want context.Canceled", err)
	}
	wantNotFound(t, b, keyA)
}

func testBadKeys(t *testing.T, b media.Backend) {
	ctx := context.Background()
	for _, key := range BadKeys {
		if err := b.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Put(%q) = %v, want ErrInvalid", key, err)
		}
		if _, _, err := b.Open(ctx, key); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Delete(%q) = %v, want ErrInvalid", key, err)
		}
	}
}

// testInvisibleUntilDone: while a Put is halfway through its reader,
// readers see nothing (or the previous object); after it, all of it.
func testInvisibleUntilDone(t *testing.T, b media.Backend) {
	put(t, b, keyB, "previous")
	for _, key := range []string{keyA, keyB} {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- b.Put(context.Background(), key, pr) }()
		half := strings.Repeat("h", 64<<10)
		if _, err := pw.Write([]byte(half)); err != nil { // the backend has read this much
			t.Fatal(err)
		}
		got, err := read(t, b, key)
		switch {
		case key == keyA && !errors.Is(err, core.ErrNotFound):
			t.Fatalf("Open during Put of a new key = %d bytes, %v; want ErrNotFound", len(got), err)
		case key == keyB && (err != nil || got != "previous"):
			t.Fatalf("Open during Put over an old object = %.20q, %v; want the old object", got, err)
		}
		if _, err := pw.Write([]byte(half)); err != nil {
			t.Fatal(err)
		}
		_ = pw.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wantContent(t, b, key, half+half)
	}
}

// testConcurrentReplace: concurrent Puts of one key and Opens of it; every
// Open sees one whole version.
func testConcurrentReplace(t *testing.T, b media.Backend) {
	versions := map[string]bool{}
	var list []string
	for i := range 4 {
		v := strings.Repeat(fmt.Sprintf("v%d-", i), 20<<10)
		versions[v] = true
		list = append(list, v)
	}
	put(t, b, keyA, list[0])
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, v := range list {
		wg.Go(func() {
			for range 5 {
				if err := b.Put(context.Background(), keyA, bytes.NewReader([]byte(v))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 20 {
				rc, _, err := b.Open(context.Background(), keyA)
				if err != nil {
					errs <- err
					return
				}
				data, err := io.ReadAll(rc)
				_ = rc.Close()
				if err != nil {
					errs <- err
					return
				}
				if !versions[string(data)] {
					errs <- fmt.Errorf("Open saw %d bytes that are no whole version", len(data))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
