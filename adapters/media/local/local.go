// Package local is kefu's default media backend: objects as files in one
// folder on the local disk (config media.dir). It implements media.Backend
// for single-node deployments. Clustered deployments need every node to read
// what any node saved: they use adapters/media/postgres (media.driver:
// postgres), or mount one folder on every node.
//
// # Layout
//
// An object under key K lives at DIR/K[0:2]/K[2:4]/K. media.CheckBackendKey
// guarantees the first four characters are letters or digits (media.Store's
// keys start with random hex), so objects spread over at most 36⁴ leaf
// directories, about 65,000 for hex keys: a million objects put some fifteen
// files in each instead of a million in one. Keys hold no path separator and
// never start with a dot, and every file access goes through an os.Root
// opened on DIR, so no key, symlink or ".." can reach outside the folder.
//
// # Atomicity and durability
//
// Put writes to a fresh file in DIR/.tmp (the same file system as the
// objects), fsyncs it, renames it over the object's path and fsyncs the
// directory: a reader sees the old object, or nothing, until the rename and
// the whole new object after it, and an object Put has acknowledged survives
// a crash of the machine. A Put that fails removes its temporary file; one
// cut short by a crash leaves it in .tmp, where New removes files older than
// an hour.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync/atomic"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

const (
	tmpDir    = ".tmp"
	staleTemp = time.Hour // temp files older than this are left from a crash
	dirPerm   = 0o750
	filePerm  = 0o640
	copyChunk = 64 << 10
)

// Backend is a media.Backend over a local folder. Create it with New and
// close it with Close. It is safe for concurrent use.
type Backend struct {
	dir    string
	root   *os.Root
	closed atomic.Bool
}

// New opens (creating it if needed) the folder dir as a media backend and
// clears temporary files a crash left behind.
func New(dir string) (*Backend, error) {
	if dir == "" {
		return nil, errors.New("media/local: empty directory")
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("media/local: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("media/local: %w", err)
	}
	if err := root.Mkdir(tmpDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		_ = root.Close()
		return nil, fmt.Errorf("media/local: %w", err)
	}
	b := &Backend{dir: dir, root: root}
	b.sweep(time.Now().Add(-staleTemp))
	return b, nil
}

// Dir returns the folder the backend keeps objects in.
func (b *Backend) Dir() string { return b.dir }

// sweep removes temporary files last written before cutoff.
func (b *Backend) sweep(cutoff time.Time) {
	entries, err := fs.ReadDir(b.root.FS(), tmpDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = b.root.Remove(path.Join(tmpDir, e.Name()))
		}
	}
}

// objectPath returns the shard directory and the path of key, relative to
// the root, after checking key.
func objectPath(key string) (dir, file string, err error) {
	if err := media.CheckBackendKey(key); err != nil {
		return "", "", err
	}
	dir = key[0:2] + "/" + key[2:4]
	return dir, dir + "/" + key, nil
}

// checkOpen fails after Close. A call already past it when Close runs
// fails on the closed os.Root instead.
func (b *Backend) checkOpen() error {
	if b.closed.Load() {
		return fmt.Errorf("media/local: %w", core.ErrClosed)
	}
	return nil
}

// Put implements media.Backend.
func (b *Backend) Put(ctx context.Context, key string, r io.Reader) (err error) {
	dir, file, err := objectPath(key)
	if err != nil {
		return err
	}
	if err := b.checkOpen(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	tmp := tmpDir + "/" + hex.EncodeToString(rnd[:]) + ".part"
	f, err := b.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	open := true
	defer func() {
		if err != nil {
			if open {
				_ = f.Close()
			}
			_ = b.root.Remove(tmp)
		}
	}()
	if err = copyCtx(ctx, f, r); err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	open = false
	if err = f.Close(); err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	if err = b.mkdirs(dir); err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	if err = ctx.Err(); err != nil { // last moment to give up without storing
		return err
	}
	if err = b.root.Rename(tmp, file); err != nil {
		return fmt.Errorf("media/local: put %s: %w", key, err)
	}
	// The object is in place; make its directory entry durable.
	if serr := b.syncDir(dir); serr != nil {
		return fmt.Errorf("media/local: put %s: sync directory: %w", key, serr)
	}
	return nil
}

// copyCtx copies r to w, checking ctx between chunks.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) error {
	buf := make([]byte, copyChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// mkdirs creates the shard directory dir ("ab/cd") if it is missing, and
// makes the new entries durable.
func (b *Backend) mkdirs(dir string) error {
	if _, err := b.root.Stat(dir); err == nil {
		return nil
	}
	parent := path.Dir(dir)
	for _, d := range []string{parent, dir} {
		err := b.root.Mkdir(d, dirPerm)
		switch {
		case errors.Is(err, fs.ErrExist):
			continue
		case err != nil:
			return err
		}
		if err := b.syncDir(path.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory under the root.
func (b *Backend) syncDir(dir string) error {
	d, err := b.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open implements media.Backend. The reader is an *os.File, so it is an
// io.ReadSeeker as well.
func (b *Backend) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	_, file, err := objectPath(key)
	if err != nil {
		return nil, 0, err
	}
	if err := b.checkOpen(); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := b.root.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("media/local: %w: %s", core.ErrNotFound, key)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("media/local: open %s: %w", key, err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("media/local: open %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, fmt.Errorf("media/local: %w: %s", core.ErrNotFound, key)
	}
	return f, info.Size(), nil
}

// Delete implements media.Backend.
func (b *Backend) Delete(ctx context.Context, key string) error {
	_, file, err := objectPath(key)
	if err != nil {
		return err
	}
	if err := b.checkOpen(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := b.root.Lstat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("media/local: %w: %s", core.ErrNotFound, key)
	case err != nil:
		return fmt.Errorf("media/local: delete %s: %w", key, err)
	case !info.Mode().IsRegular():
		return fmt.Errorf("media/local: %w: %s", core.ErrNotFound, key)
	}
	if err := b.root.Remove(file); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("media/local: %w: %s", core.ErrNotFound, key)
		}
		return fmt.Errorf("media/local: delete %s: %w", key, err)
	}
	return nil
}

// Close releases the folder. Calls after Close fail with core.ErrClosed;
// readers already open stay usable. Close is idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	return b.root.Close()
}

var (
	_ media.Backend = (*Backend)(nil)
	_ io.Closer     = (*Backend)(nil)
)

// Keys implements media.Lister: it calls fn with the key of every object in
// the folder (files at the place their key puts them; anything else, such
// as temporary files, is not an object).
func (b *Backend) Keys(ctx context.Context, fn func(key string) error) error {
	if err := b.checkOpen(); err != nil {
		return err
	}
	return fs.WalkDir(b.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("media/local: list: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p == tmpDir {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if _, file, err := objectPath(d.Name()); err != nil || file != p {
			return nil
		}
		return fn(d.Name())
	})
}

var _ media.Lister = (*Backend)(nil)
