package media_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/media/memory"
	"github.com/kefuhq/kefu/media"
)

func TestCopy(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "media")
	src, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	objects := map[string]string{
		"0a1b2c3d4e5f60718293a4b5c6d7e8f9.png":         "png bytes",
		"0a1b2c3d4e5f60718293a4b5c6d7e8f9.preview.jpg": "jpeg bytes",
		"ffee0000000000000000000000000000.pdf":         "",
	}
	for k, v := range objects {
		if err := src.Put(ctx, k, strings.NewReader(v)); err != nil {
			t.Fatal(err)
		}
	}
	// Files that are no objects: a temporary file, one outside its shard,
	// one whose name is no key.
	for _, p := range []string{".tmp/abc.part", "ab/cd/ffee0000000000000000000000000001.pdf", "0a/1b/NOTAKEY"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
	}

	dst := memory.New()
	c, err := media.Copy(ctx, dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Copied != 3 || c.Skipped != 0 || c.Bytes != int64(len("png bytes")+len("jpeg bytes")) {
		t.Errorf("first copy = %+v", c)
	}
	keys := dst.Keys()
	slices.Sort(keys)
	want := []string{"0a1b2c3d4e5f60718293a4b5c6d7e8f9.png", "0a1b2c3d4e5f60718293a4b5c6d7e8f9.preview.jpg",
		"ffee0000000000000000000000000000.pdf"}
	if !slices.Equal(keys, want) {
		t.Fatalf("copied %v, want %v", keys, want)
	}
	for k, v := range objects {
		rc, _, err := dst.Open(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		_ = rc.Close()
		if string(got) != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}

	// Again: everything is there already.
	if c, err := media.Copy(ctx, dst, src); err != nil || c.Copied != 0 || c.Skipped != 3 {
		t.Errorf("second copy = %+v, %v", c, err)
	}
}

func TestCopyFails(t *testing.T) {
	ctx := context.Background()
	src, err := local.New(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.png"
	if err := src.Put(ctx, key, strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	t.Run("source cannot list", func(t *testing.T) {
		if _, err := media.Copy(ctx, memory.New(), memory.New()); err == nil || !strings.Contains(err.Error(), "cannot list") {
			t.Fatalf("Copy = %v", err)
		}
	})
	t.Run("target refuses", func(t *testing.T) {
		c, err := media.Copy(ctx, failingPut{memory.New()}, src)
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), key) || c.Copied != 0 {
			t.Fatalf("Copy = %+v, %v; want the target's error naming the key", c, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := media.Copy(ctx, memory.New(), src); !errors.Is(err, context.Canceled) {
			t.Fatalf("Copy = %v", err)
		}
	})
}

var errRefused = errors.New("refused by test")

type failingPut struct{ *memory.Backend }

func (failingPut) Put(context.Context, string, io.Reader) error { return errRefused }
