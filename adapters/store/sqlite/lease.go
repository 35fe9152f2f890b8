package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Leases. One SQLite file serves one kefu process, whose clock is the
// database's clock, so the leases live in the Store's memory rather than
// in a table: they keep core.LeaseStore's contract, so that the node runs
// its single-node work the same way a cluster does, but never wait for the
// writer. Through the writer a renewal would queue behind every write
// waiting to be committed, and a backlog longer than a third of the lease
// TTL would make the node stop and restart its own deliverers and pollers
// although no other node can hold their leases. A process that opens the
// file starts with no leases held, as if a killed predecessor had released
// them, and waits for none.
//
// The schema's leases table is no longer written; clearLeases empties
// what an earlier version of kefu left in it.

// leaseTable is the Store's leases. The zero value holds none.
type leaseTable struct {
	mu   sync.Mutex
	held map[string]heldLease // by lease name
}

type heldLease struct {
	holder  string
	expires time.Time
}

// clearLeases drops the rows an earlier version of kefu left in the leases
// table. Open calls it before the writer starts.
func (s *Store) clearLeases(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM leases`); err != nil {
		return fmt.Errorf("sqlite: clear leases: %w", err)
	}
	return nil
}

// AcquireLease implements core.Store.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, invalid("lease needs a name, a holder and a positive ttl (name %q, holder %q, ttl %v)",
			name, holder, ttl)
	}
	if s.isClosed.Load() {
		return false, core.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	t := &s.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	now := s.now()
	// A free lease, an expired one or one the holder has is taken (its
	// expiry set to now + ttl); another holder's live lease is left alone.
	if l, ok := t.held[name]; ok && l.holder != holder && now.Before(l.expires) {
		return false, nil
	}
	if t.held == nil {
		t.held = map[string]heldLease{}
	}
	t.held[name] = heldLease{holder: holder, expires: now.Add(ttl)}
	return true, nil
}

// ReleaseLease implements core.Store.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if name == "" || holder == "" {
		return invalid("lease needs a name and a holder (name %q, holder %q)", name, holder)
	}
	if s.isClosed.Load() {
		return core.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t := &s.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.held[name]; ok && l.holder == holder {
		delete(t.held, name)
	}
	return nil
}
