package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
)

// TestLeasesClearedOnOpen: the leases a killed run left are gone when the
// file is opened again, even for a node with another node_id (a container
// recreated with a new hostname), which therefore does not wait for them to
// expire.
func TestLeasesClearedOnOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	old := open(t, path, sqlite.Options{})
	if ok, err := old.AcquireLease(ctx, "deliver.wa", "old-host", time.Hour); err != nil || !ok {
		t.Fatalf("AcquireLease = %v, %v", ok, err)
	}
	if err := old.Close(); err != nil { // the process dies holding the lease
		t.Fatal(err)
	}
	s := open(t, path, sqlite.Options{})
	if ok, err := s.AcquireLease(ctx, "deliver.wa", "new-host", time.Hour); err != nil || !ok {
		t.Fatalf("the new node's AcquireLease = %v, %v; want the lease", ok, err)
	}
}
