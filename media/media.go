// Package media keeps the images and files that customers and agents send:
// the policy (what may be stored, how big, under which key, with which
// preview) over a Backend that only stores bytes.
//
// A Store is the one way in. Save sniffs the type from the content (never
// from a file name or a declared type), refuses types that are not allowed
// and bodies over the size limit while streaming (nothing is kept on
// refusal), stores the bytes under a random key and, for images, a small
// JPEG preview with the metadata stripped. Fetch does the same for a
// provider's media URL, which channels call as soon as a message arrives
// because provider URLs expire.
//
// Backends live in adapters/media: local (a folder, the default), postgres
// (the store's PostgreSQL database, for clusters: config media.driver) and
// memory (tests). Each passes the contract suite in media/mediatest.
package media

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kefuhq/kefu/core"
)

// Backend stores opaque objects by key. It is the seam between the media
// policy (Store) and where bytes live: adapters/media/local keeps them in a
// folder on one machine; adapters/media/postgres in the PostgreSQL database
// every node of a cluster shares, so each node reads what any node saved. An
// S3-compatible bucket would go behind this same interface; nothing above it
// changes.
//
// Contract, for every implementation (media/mediatest checks it):
//   - Safe for concurrent use by any number of goroutines.
//   - Keys follow CheckBackendKey; a backend rejects any other key with an
//     error wrapping core.ErrInvalid and touches nothing. (Store hands it
//     only keys it generated, so this is defence in depth: a backend must
//     never let a key name something outside its own storage.)
//   - Put is atomic: a concurrent or later Open sees the whole object or, if
//     Put has not returned nil, none of it (the previous object under the
//     key, if any, or ErrNotFound). If r returns an error, ctx is cancelled
//     or the write fails, Put returns an error and stores nothing. Put
//     replaces an existing object under the same key. An object is durable
//     (it survives a crash of the process and of the machine) once Put
//     returns nil.
//   - Open returns the object's bytes and size. The caller closes the
//     reader. The reader may also implement io.Seeker (local's and
//     postgres's do), which HTTP handlers use to serve ranges; callers find
//     out by type assertion. ctx bounds the opening, not the reading.
//   - Delete removes the object. Readers opened before may go on reading
//     (postgres's for an hour; a later read fails with an error, never with
//     a short object).
//   - Open and Delete of a missing key return an error wrapping
//     core.ErrNotFound.
//   - ctx cancellation abandons the call; a Put whose ctx is cancelled
//     before it returns stores nothing.
//   - A backend holding resources also implements io.Closer; its owner
//     closes it after the last call.
type Backend interface {
	// Put stores everything r yields under key, atomically.
	Put(ctx context.Context, key string, r io.Reader) error
	// Open opens the object under key and returns its size in bytes.
	Open(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Delete removes the object under key.
	Delete(ctx context.Context, key string) error
}

// Errors of Save and Fetch. Both wrap core.ErrInvalid, so HTTP layers that
// map ErrInvalid to a 4xx answer need nothing more; test for the specific
// one with errors.Is (413 for ErrTooLarge, 415 for ErrTypeNotAllowed).
var (
	// ErrTooLarge: the body is larger than Options.MaxBytes.
	ErrTooLarge = fmt.Errorf("%w: file too large", core.ErrInvalid)
	// ErrTypeNotAllowed: the sniffed type is not in Options.Allowed. The
	// returned error names the sniffed type.
	ErrTypeNotAllowed = fmt.Errorf("%w: file type not allowed", core.ErrInvalid)
)

// Backend keys: what every Backend accepts. Store's keys are a subset.
const (
	minBackendKey = 5
	maxBackendKey = 128
)

// CheckBackendKey reports whether key is one a Backend accepts: 5 to 128
// bytes of lowercase letters, digits, '.', '_' and '-', whose first four are
// letters or digits and which holds no "..". Such a key has no path
// separator and cannot start with a dot, so it names exactly one object on
// any storage; backends that shard by key prefix (local) may rely on the
// first four characters. The error wraps core.ErrInvalid.
func CheckBackendKey(key string) error {
	if len(key) < minBackendKey || len(key) > maxBackendKey {
		return fmt.Errorf("%w: media key must be %d to %d bytes", core.ErrInvalid, minBackendKey, maxBackendKey)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i >= 4 && (c == '.' || c == '_' || c == '-'):
			if c == '.' && key[i-1] == '.' {
				return fmt.Errorf("%w: media key holds \"..\"", core.ErrInvalid)
			}
		default:
			return fmt.Errorf("%w: media key has a character out of place at byte %d", core.ErrInvalid, i)
		}
	}
	return nil
}

// notFound wraps core.ErrNotFound for a key.
func notFound(what, key string) error {
	return fmt.Errorf("%w: %s %q", core.ErrNotFound, what, key)
}

// isNotFound reports whether err means the object does not exist.
func isNotFound(err error) bool { return errors.Is(err, core.ErrNotFound) }
