// Package memory is a media.Backend that keeps objects in a map, for tests
// and throwaway runs: nothing survives the process. It passes the same
// contract suite (media/mediatest) as the real backends.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Backend is an in-memory media.Backend. The zero value is ready to use,
// and it is safe for concurrent use.
type Backend struct {
	mu      sync.RWMutex
	objects map[string][]byte
}

// New returns an empty Backend.
func New() *Backend { return &Backend{} }

// Put implements media.Backend: it reads all of r, then stores it in one
// step, so readers never see part of it.
func (b *Backend) Put(ctx context.Context, key string, r io.Reader) error {
	if err := media.CheckBackendKey(key); err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("media/memory: put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.objects == nil {
		b.objects = map[string][]byte{}
	}
	b.objects[key] = buf.Bytes()
	return nil
}

// Open implements media.Backend. The reader is an io.ReadSeeker as well.
func (b *Backend) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := media.CheckBackendKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	b.mu.RLock()
	data, ok := b.objects[key]
	b.mu.RUnlock()
	if !ok {
		return nil, 0, fmt.Errorf("media/memory: %w: %s", core.ErrNotFound, key)
	}
	// Stored slices are never written again, so readers can share them.
	return readSeekNopCloser{bytes.NewReader(data)}, int64(len(data)), nil
}

// Delete implements media.Backend.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := media.CheckBackendKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[key]; !ok {
		return fmt.Errorf("media/memory: %w: %s", core.ErrNotFound, key)
	}
	delete(b.objects, key)
	return nil
}

// Keys returns the keys stored, in no particular order: tests use it to
// check that nothing was left behind.
func (b *Backend) Keys() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	keys := make([]string, 0, len(b.objects))
	for k := range b.objects {
		keys = append(keys, k)
	}
	return keys
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

var _ media.Backend = (*Backend)(nil)
