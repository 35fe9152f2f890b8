package media

import (
	"context"
	"fmt"
	"io"
)

// Lister is an optional capability of a Backend: listing every key it
// holds (adapters/media/local has it). Copy uses it.
type Lister interface {
	// Keys calls fn with every key the backend holds, in no particular
	// order, and stops at the first error fn or the listing returns.
	// Objects stored or deleted while it runs may or may not be listed.
	Keys(ctx context.Context, fn func(key string) error) error
}

// CopyCount is what Copy did.
type CopyCount struct {
	Copied  int   // objects copied
	Skipped int   // objects dst already held with the same size
	Bytes   int64 // bytes copied
}

// Copy copies every object of src, which must be a Lister, into dst, one
// at a time, so that a deployment can move its files from one backend to
// another (kefu migrate sqlite-to-postgres -media DIR). An object dst
// already holds with the same size is skipped: keys name their content
// (media.Store never writes one key twice with other bytes), so running
// Copy again after an interruption copies only what is missing. It stops at
// the first error, naming the key; what it copied before stays copied.
func Copy(ctx context.Context, dst, src Backend) (CopyCount, error) {
	var c CopyCount
	l, ok := src.(Lister)
	if !ok {
		return c, fmt.Errorf("media: copy: the source backend (%T) cannot list its keys", src)
	}
	err := l.Keys(ctx, func(key string) error {
		rc, size, err := src.Open(ctx, key)
		if isNotFound(err) { // deleted since it was listed
			return nil
		}
		if err != nil {
			return fmt.Errorf("media: copy %s: %w", key, err)
		}
		defer func() { _ = rc.Close() }()
		if drc, dsize, err := dst.Open(ctx, key); err == nil {
			_ = drc.Close()
			if dsize == size {
				c.Skipped++
				return nil
			}
		} else if !isNotFound(err) {
			return fmt.Errorf("media: copy %s: %w", key, err)
		}
		cr := &countingReader{r: rc}
		if err := dst.Put(ctx, key, cr); err != nil {
			return fmt.Errorf("media: copy %s: %w", key, err)
		}
		if cr.n != size {
			return fmt.Errorf("media: copy %s: read %d bytes of %d (did it change while copied?)", key, cr.n, size)
		}
		c.Copied++
		c.Bytes += cr.n
		return nil
	})
	return c, err
}

// countingReader counts what it reads.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
