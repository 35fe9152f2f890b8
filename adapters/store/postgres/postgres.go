// Package postgres is kefu's clustered store: core.Store on PostgreSQL
// (github.com/jackc/pgx/v5), which any number of kefu nodes share.
//
// # Writes
//
// Each Store has one writer goroutine, on a connection of its own (reads use
// a separate pool and cannot starve it), that group-commits: it takes every
// write that is waiting (up to Options.MaxBatch), runs them in one
// transaction, each under its own SAVEPOINT so that one write's failure is
// only its own, and answers the callers after COMMIT. A write is usually one
// statement (data-modifying CTEs: the conversation's UPDATE … last_seq + 1
// RETURNING, the message's INSERT … ON CONFLICT (dedup_key) DO NOTHING, the
// outbox entry), sent in the same round trip as the savepoint commands
// around it. A write that finds its dedup key taken rolls back to its
// savepoint and reads the stored message.
//
// # Message IDs in commit order
//
// Agents resume with the global message ID as their cursor (core.Store's
// Feed), so an ID must never become visible after a higher one: a reader
// that has seen ID n must never later find a new message below n. With
// concurrent transactions, a plain sequence breaks this: transaction A draws
// ID 10, B draws 11 and commits, a reader sees 11 and moves its cursor past
// 10, then A commits 10, which the reader never sees.
//
// This store serializes its write transactions instead: every batch first
// locks the one row of the write_lock table (SELECT … FOR UPDATE), on every
// node, and only then draws IDs (identity columns with CACHE 1) and writes.
// PostgreSQL makes a transaction visible before it releases its locks, so
// batch N is visible before batch N+1 can draw an ID: IDs are drawn, and
// become visible, in commit order. Readers are not affected (MVCC).
//
// The cost: kefu's writes run one transaction at a time for the whole
// cluster, and the lock is held through each COMMIT's WAL flush. Group
// commit is what makes that cheap: while one batch holds the lock, the
// writes of every node queue up, and each node's next batch takes all of
// them (the writer fills its batch again once it has the lock). Throughput
// is then bounded by one PostgreSQL backend executing batches back to back,
// not by commit latency. Scaling out adds capacity for sockets, webhooks and
// fan-out, not for store writes. Two benefits come with it: since every
// writer takes the same lock first, kefu's writers never deadlock; and the
// invariants that need a lock across nodes (one winner per conversation,
// max_open_per_agent, de-duplication) hold a fortiori, although each one is
// also enforced on its own (a conditional UPDATE, a lock on the agent's row,
// unique keys with ON CONFLICT DO NOTHING), so they stay right if the lock
// is ever narrowed.
//
// Alternatives weighed: drawing IDs late (a lock taken just before COMMIT,
// messages inserted with temporary IDs and renumbered) lets batches of
// different nodes work in parallel, but rewrites every message row and its
// outbox entry, and the batches, which lock conversation and agent rows in
// arbitrary order, then deadlock with each other; filtering reads by the
// oldest running transaction (pg_snapshot_xmin) needs IDs ordered like
// transaction IDs, which they are not, and stalls the feed behind any long
// transaction in the database (a backup, a migration).
//
// A node that dies mid-batch releases the lock when PostgreSQL notices:
// at once for a killed process (its socket closes), and after
// idle_in_transaction_session_timeout (30 s unless the DSN sets it) for a
// vanished machine.
//
// # Schema
//
// The schema is versioned with goose; Open applies the embedded migrations
// under a session advisory lock, so nodes starting together migrate once.
// Tables live in the connection's search_path: a DSN may name a schema with
// search_path=… (tests give each run its own).
package postgres

import (
	"context"
	"embed"
	"fmt"
	"hash/crc64"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/kefuhq/kefu/core"
)

// DefaultMaxBatch is the default Options.MaxBatch. Each write in a batch
// runs in its own subtransaction; PostgreSQL caches up to 64 subtransaction
// IDs per backend, and past that every other session's snapshots take the
// slow path through pg_subtrans while the batch runs. 64 writes per
// transaction already spread a commit over enough writes.
const DefaultMaxBatch = 64

// batchTimeout bounds one batch: waiting for the write lock, running the
// writes and committing. A batch that takes longer fails (its callers get
// the error) rather than stalling the node.
const batchTimeout = 2 * time.Minute

// Options configures Open. The zero value of every field but DSN is usable.
type Options struct {
	// DSN is the PostgreSQL connection string (postgres://… URL or
	// key=value), as pgx reads it: pool_max_conns, search_path and other
	// run-time parameters may be given in it.
	DSN string
	// MaxBatch is the most writes committed in one transaction. 0 means
	// DefaultMaxBatch; 1 commits every write on its own (no group commit).
	MaxBatch int
	// Logger receives migration and failure logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for times a caller leaves zero; nil means time.Now.
	Now func() time.Time
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the embedded goose migrations (for tests and tools).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFS, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}

// Store is core.Store on PostgreSQL. Create it with Open and release it
// with Close.
type Store struct {
	log   *slog.Logger
	now   func() time.Time
	pool  *pgxpool.Pool // reads, migrations and imports
	wpool *pgxpool.Pool // the writer's one connection, which reads cannot starve
	batch int

	// mu guards closed and sending on ops: Close takes it exclusively, so no
	// caller sends on a closed channel.
	mu       sync.RWMutex
	closed   bool
	isClosed atomic.Bool // closed, for readers that do not take mu
	ops      chan *op
	done     chan struct{} // closed when the writer goroutine has returned

	closeOnce sync.Once
}

// Open connects to the database o.DSN names, migrates it to the latest
// schema and starts the writer.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.DSN == "" {
		return nil, fmt.Errorf("postgres: %w: a DSN is required", core.ErrInvalid)
	}
	if o.MaxBatch < 0 {
		return nil, fmt.Errorf("postgres: %w: max batch %d", core.ErrInvalid, o.MaxBatch)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w: DSN: %w", core.ErrInvalid, err)
	}
	params := cfg.ConnConfig.RuntimeParams
	for k, v := range map[string]string{
		"application_name": "kefu",
		// A writer whose machine vanished mid-batch holds the write lock
		// until its session ends; this ends it.
		"idle_in_transaction_session_timeout": "30s",
	} {
		if _, ok := params[k]; !ok {
			params[k] = v
		}
	}
	wcfg := cfg.Copy()
	wcfg.MaxConns, wcfg.MinConns = 1, 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	wpool, err := pgxpool.NewWithConfig(ctx, wcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{
		log:   o.Logger,
		now:   o.Now,
		pool:  pool,
		wpool: wpool,
		batch: o.MaxBatch,
		ops:   make(chan *op, max(4*o.MaxBatch, 64)),
		done:  make(chan struct{}),
	}
	if err := pool.Ping(ctx); err != nil {
		s.closePools()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.closePools()
		return nil, err
	}
	go s.writer()
	return s, nil
}

// migrate brings the schema to the latest embedded version. Nodes starting
// together take turns under an advisory lock keyed by the schema, so each
// schema is migrated once and unrelated schemas do not wait for each other.
func (s *Store) migrate(ctx context.Context) error {
	var schema string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	if schema == "" {
		return fmt.Errorf("postgres: migrations: no schema in search_path to create tables in")
	}
	id := int64(crc64.Checksum([]byte("kefu migrate "+schema), crc64.MakeTable(crc64.ECMA)) >> 1)
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(id), lock.WithLockTimeout(1, 600))
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer func() { _ = db.Close() }()
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithDisableGlobalRegistry(true), goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	for _, r := range res {
		s.log.Info("postgres: migrated", "schema", schema, "version", r.Source.Version,
			"file", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// Ping checks that the store is open and the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed.Load() {
		return core.ErrClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return s.readErr(err, "ping")
	}
	return nil
}

// Close stops accepting writes, commits those already queued, and closes the
// connections. It is idempotent; later calls to any method return
// core.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.isClosed.Store(true)
		close(s.ops)
		s.mu.Unlock()
		<-s.done
		s.closePools()
	})
	return nil
}

func (s *Store) closePools() {
	s.wpool.Close()
	s.pool.Close()
}

var _ core.Store = (*Store)(nil)
