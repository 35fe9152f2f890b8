package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/core"
)

// Leases.
//
// A lease write is one statement that commits on its own, sent on the read
// pool rather than through the group-commit writer: it draws no message ID,
// so it needs no place in the write_lock's order, and a node's lease
// renewals must not wait behind a backlog of message writes (a renewal
// that waits too long makes the node give its work up). The row's own
// lock makes concurrent upserts of one lease, from any node, take turns.
//
// Expiry uses clock_timestamp(), the database's clock at the moment the
// statement runs (now() would be the transaction's start), never a node's.

// AcquireLease implements core.Store.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, invalid("lease needs a name, a holder and a positive ttl (name %q, holder %q, ttl %v)",
			name, holder, ttl)
	}
	if s.isClosed.Load() {
		return false, core.ErrClosed
	}
	// The upsert takes a free lease (insert), an expired one or one the
	// holder has (update); another holder's live lease matches no row and
	// returns nothing.
	var got string
	err := s.pool.QueryRow(ctx, `INSERT INTO leases (name, holder, acquired_at, expires_at)
		VALUES ($1, $2, clock_timestamp(), clock_timestamp() + $3::bigint * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET
			acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END,
			holder = excluded.holder,
			expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()
		RETURNING holder`, name, holder, max(ttl.Microseconds(), 1)).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.readErr(err, "acquire lease %s", name)
	}
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
	_, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
	return s.readErr(err, "release lease %s", name)
}
