package core

import (
	"context"
	"time"
)

// LeaseStore keeps cluster leases: named, expiring claims that let work
// which must run on one node at a time (an outbox's delivery, a channel's
// polling loop, a follower) run on exactly one node of a cluster, and move
// to another when that node stops or dies (bridge.RunLeased). Every Store
// is one; the methods are safe for concurrent use from any number of nodes
// sharing the database.
type LeaseStore interface {
	// AcquireLease takes the lease called name for holder until ttl from
	// now, as the database's clock tells (nodes' clocks may differ), and
	// reports whether holder holds it now. A lease that is free or expired
	// is taken; one that holder already holds is renewed (its expiry moves
	// to now + ttl); one that another holder holds and that has not
	// expired is left alone (false, nil). Of concurrent callers on any node
	// at most one holds a lease at a time. An empty name or holder, or a
	// ttl ≤ 0, is ErrInvalid and changes nothing.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// ReleaseLease frees the lease called name if holder holds it (expired
	// or not), so that another holder can take it at once. A lease that is
	// free or held by another holder is left alone, and that is not an
	// error. An empty name or holder is ErrInvalid.
	ReleaseLease(ctx context.Context, name, holder string) error
}
