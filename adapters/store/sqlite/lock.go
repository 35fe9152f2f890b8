//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/kefuhq/kefu/core"
)

// One process per database: the writer keeps conversations cached
// (convCache) because it is the only writer, and Open clears the leases
// that a crashed process left. A second process on the same file would
// break both, so Open takes an exclusive lock on PATH-lock (a file of its
// own: a lock on the database file could interfere with SQLite's), and
// Close releases it. The lock is the kernel's (flock): it goes with the
// process, however that ends.

// lockFile holds the lock on a database.
type lockFile struct{ f *os.File }

// lockDB takes the lock of the database at path, or says which process
// holds it.
func lockDB(path string) (*lockFile, error) {
	f, err := os.OpenFile(path+"-lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path + "-lock"); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder = "process " + strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("sqlite: %w: %s is in use by %s (one kefu process per SQLite database; "+
				"for several nodes use PostgreSQL)", core.ErrConflict, path, holder)
		}
		return nil, fmt.Errorf("sqlite: lock %s: %w", path, err)
	}
	// Who holds it, for the message above; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &lockFile{f: f}, nil
}

// release drops the lock.
func (l *lockFile) release() error {
	if l == nil {
		return nil
	}
	return l.f.Close() // closing the only descriptor releases the flock
}
