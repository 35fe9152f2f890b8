package local_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/media/mediatest"
)

func newBackend(t *testing.T) (*local.Backend, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "media")
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, dir
}

func TestContract(t *testing.T) {
	mediatest.Run(t, func(t *testing.T) media.Backend {
		b, dir := newBackend(t)
		t.Cleanup(func() {
			if files := regularFiles(t, dir); len(files) > 0 && t.Failed() {
				t.Logf("files left: %v", files)
			}
		})
		return b
	})
}

// regularFiles lists every regular file under dir, relative to it.
func regularFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

const key = "3f2a0000000000000000000000000001.png"

func TestShardedLayout(t *testing.T) {
	b, dir := newBackend(t)
	if err := b.Put(context.Background(), key, strings.NewReader("png")); err != nil {
		t.Fatal(err)
	}
	got := regularFiles(t, dir)
	want := "3f/2a/" + key
	if len(got) != 1 || got[0] != want {
		t.Fatalf("files = %v, want [%s]", got, want)
	}
	if err := b.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if got := regularFiles(t, dir); len(got) != 0 {
		t.Fatalf("after Delete, files = %v", got)
	}
}

type brokenReader struct{ n int }

func (r *brokenReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("broken pipe")
	}
	k := min(r.n, len(p))
	r.n -= k
	return k, nil
}

// A failed Put leaves no file at all: not the object, not a temp file.
func TestFailedPutLeavesNoFile(t *testing.T) {
	b, dir := newBackend(t)
	if err := b.Put(context.Background(), key, &brokenReader{n: 200 << 10}); err == nil {
		t.Fatal("Put succeeded")
	}
	if files := regularFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left after failed Put: %v", files)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, key, strings.NewReader("x")); err == nil {
		t.Fatal("Put with cancelled ctx succeeded")
	}
	if files := regularFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left after cancelled Put: %v", files)
	}
}

// Files a crash left in .tmp are swept by New once they are stale; fresh
// ones (a Put in flight in another process) stay.
func TestNewSweepsStaleTemp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	stale := filepath.Join(dir, ".tmp", "stale.part")
	fresh := filepath.Join(dir, ".tmp", "fresh.part")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	b, err = local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
}

// A symlink planted inside the folder cannot lead outside it.
func TestSymlinkCannotEscape(t *testing.T) {
	b, dir := newBackend(t)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "3f"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "3f", "2a")); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	if err := os.Symlink(secret, filepath.Join(outside, key)); err != nil {
		t.Fatal(err)
	}
	if rc, _, err := b.Open(context.Background(), key); err == nil {
		data, _ := io.ReadAll(rc)
		rc.Close()
		t.Fatalf("Open followed a symlink out of the folder: %q", data)
	}
	if err := b.Put(context.Background(), key, strings.NewReader("overwrite")); err == nil {
		t.Fatal("Put wrote through a symlink out of the folder")
	}
	if data, _ := os.ReadFile(secret); string(data) != "secret" {
		t.Fatalf("file outside the folder changed: %q", data)
	}
}

func TestClosed(t *testing.T) {
	b, _ := newBackend(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Put(context.Background(), key, strings.NewReader("x")); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
}

func TestNewEmptyDir(t *testing.T) {
	if _, err := local.New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}
