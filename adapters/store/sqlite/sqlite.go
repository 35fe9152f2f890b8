// Package sqlite is kefu's embedded store: core.Store on one SQLite file
// (modernc.org/sqlite, no cgo), the default for a single node.
//
// Writes go through one writer connection owned by one goroutine, which
// group-commits them: it takes every write that is waiting (up to
// Options.MaxBatch), runs them in one BEGIN IMMEDIATE transaction, each under
// its own SAVEPOINT so that one write's failure is only its own, and answers
// the callers after COMMIT. Reads use a separate pool of read-only
// connections, which WAL lets run beside the writer, and WAL checkpoints run
// from a connection of their own, off the writer's path (checkpoint.go).
//
// The schema is versioned with goose; Open applies the embedded migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/kefuhq/kefu/core"
)

// DefaultMaxBatch is the default Options.MaxBatch.
const DefaultMaxBatch = 256

// Options configures Open. The zero value of every field but Path is usable.
type Options struct {
	// Path is the database file. Its directory is created if missing.
	Path string
	// Sync is the durability level (store.sync): "normal" (the default) is
	// safe against a killed process, "full" also against power loss. It sets
	// PRAGMA synchronous.
	Sync string
	// MaxBatch is the most writes committed in one transaction. 0 means
	// DefaultMaxBatch; 1 commits every write on its own (no group commit).
	MaxBatch int
	// CheckpointInterval is the least time between two WAL checkpoints run
	// by the background checkpointer (checkpoint.go). 0 means
	// DefaultCheckpointInterval; a negative value turns the checkpointer off
	// and leaves checkpoints to SQLite's automatic one, run inside the
	// commit that takes the WAL past 1,000 pages.
	CheckpointInterval time.Duration
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

// Store is core.Store on SQLite. Create it with Open and release it with Close.
type Store struct {
	log *slog.Logger
	now func() time.Time

	w     *sql.DB // the writer: one connection, used only by the writer goroutine
	r     *sql.DB // read-only connections
	wst   [numWStmts]*sql.Stmt
	rst   [numRStmts]*sql.Stmt
	adhoc adhocStmts // ad hoc reads' statements; see adhoc.go
	batch int
	cache *convCache // the writer's; see convCache

	// The identities with a conversation (see identFilter), and the scan
	// that fills it from what was stored before Open.
	idents     *identFilter
	identsStop context.CancelFunc
	identsDone chan struct{}

	leases leaseTable // the cluster leases, kept off the writer; see lease.go

	// The checkpointer (nil channels when it is off).
	ckDB   *sql.DB       // its connection
	wrote  chan struct{} // the writer's note that a batch was committed
	ckStop chan struct{} // closed by Close
	ckDone chan struct{} // closed when the checkpointer has returned
	ck     ckStats
	rewind atomic.Bool // the checkpointer asks the writer to catch up (catchUp)

	// What the writer has done, for tests: batches committed (or failed)
	// and the writes in them.
	commits, committed atomic.Int64
	// Conversations questions the identity filter answered, for tests.
	identSkips atomic.Int64

	// mu guards closed and sending on ops: Close takes it exclusively, so no
	// caller sends on a closed channel.
	mu       sync.RWMutex
	closed   bool
	isClosed atomic.Bool // closed, for readers that do not take mu
	ops      chan *op
	done     chan struct{} // closed when the writer goroutine has returned

	lock      *lockFile // one process per database (lock.go)
	closeOnce sync.Once
	closeErr  error
}

// newPageSize is the page size of a database Open creates; one already
// created keeps its own. Each commit appends every page it changed to the
// WAL, and a message changes a few pages in different places (its
// conversation's row, the conversation-and-seq index, the dedup-key index,
// the table's last page), so the WAL's bytes per message grow with the page
// size: at 5,000 messages/s the server wrote 17 KB to disk per message with
// SQLite's default 4 KB pages and 6.5–6.9 KB with 1 KB pages, and reads were
// as fast (BENCHMARKS.md). A row longer than about 1,000 bytes (a long
// message's text) continues on overflow pages.
const newPageSize = 1024

// createFile creates the database at path in WAL mode with newPageSize
// pages, unless it exists, and returns its page size. The page size of a
// database is fixed by its first write; converting one needs a VACUUM
// outside WAL mode (docs/operations.md).
func createFile(ctx context.Context, path string) (int64, error) {
	db, err := sql.Open("sqlite", path+fmt.Sprintf("?_busy_timeout=10000&_pragma=page_size(%d)&_journal_mode=WAL", newPageSize))
	if err != nil {
		return 0, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return n, nil
}

// Open opens (creating if needed) the database at o.Path, migrates it to the
// latest schema and starts the writer.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Path == "" || o.Path == ":memory:" {
		return nil, fmt.Errorf("sqlite: %w: a file path is required", core.ErrInvalid)
	}
	if strings.ContainsRune(o.Path, '?') {
		return nil, fmt.Errorf("sqlite: %w: path %q contains '?'", core.ErrInvalid, o.Path)
	}
	syncMode := "NORMAL"
	switch strings.ToLower(o.Sync) {
	case "", "normal":
	case "full":
		syncMode = "FULL"
	default:
		return nil, fmt.Errorf("sqlite: %w: sync %q (want normal or full)", core.ErrInvalid, o.Sync)
	}
	if o.MaxBatch < 0 {
		return nil, fmt.Errorf("sqlite: %w: max batch %d", core.ErrInvalid, o.MaxBatch)
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
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	background := o.CheckpointInterval > 0
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	lock, err := lockDB(o.Path)
	if err != nil {
		return nil, err
	}
	s := &Store{
		lock:  lock,
		log:   o.Logger,
		now:   o.Now,
		batch: o.MaxBatch,
		cache: newConvCache(),
		ops:   make(chan *op, max(4*o.MaxBatch, 64)),
		done:  make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			s.closeDBs()
		}
	}()

	// The writer. _txlock=immediate makes every transaction BEGIN IMMEDIATE,
	// so the write lock is taken up front and never upgraded mid-transaction.
	// temp_store(memory) keeps the sub-journal that each op's savepoint
	// writes in memory; on disk it costs a write per page per op. With the
	// checkpointer on, the writer's own automatic checkpoint is only a
	// backstop (backstopBytes).
	pageSize, err := createFile(ctx, o.Path)
	if err != nil {
		return nil, err
	}
	wal := ""
	if background {
		wal = fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", backstopBytes/pageSize)
	}
	vfs, err := registerWALVFS()
	if err != nil {
		return nil, err
	}
	if vfs != "" {
		wal += "&vfs=" + vfs
	}
	s.w, err = sql.Open("sqlite", o.Path+"?_txlock=immediate&_busy_timeout=10000"+
		"&_journal_mode=WAL&_foreign_keys=on&_pragma=temp_store(memory)&_synchronous="+syncMode+wal)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.w.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if err := s.clearLeases(ctx); err != nil {
		return nil, err
	}
	for i, q := range wstmtSQL {
		if s.wst[i], err = s.w.PrepareContext(ctx, q); err != nil {
			return nil, fmt.Errorf("sqlite: prepare %q: %w", q, err)
		}
	}

	// Readers, opened after the writer has put the file in WAL mode.
	s.r, err = sql.Open("sqlite", o.Path+"?_busy_timeout=10000&_query_only=on")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	for i, q := range rstmtSQL {
		if s.rst[i], err = s.r.PrepareContext(ctx, q); err != nil {
			return nil, fmt.Errorf("sqlite: prepare %q: %w", q, err)
		}
	}

	// The checkpointer's connection: it writes the database file, synced at
	// the writer's level.
	if background {
		s.ckDB, err = sql.Open("sqlite", o.Path+fmt.Sprintf("?_busy_timeout=%d&_synchronous=", ckBusyTimeout)+syncMode)
		if err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
		}
		s.ckDB.SetMaxOpenConns(1)
		s.ckDB.SetMaxIdleConns(1)
		s.ckDB.SetConnMaxLifetime(0)
		s.ckDB.SetConnMaxIdleTime(0)
		if err := s.ckDB.PingContext(ctx); err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
		}
		s.ck.restartAt.Store(restartBytes / pageSize)
		s.wrote = make(chan struct{}, 1)
		s.ckStop = make(chan struct{})
		s.ckDone = make(chan struct{})
	}

	var convs int64
	if err := s.r.QueryRowContext(ctx, `SELECT IFNULL(MAX(id), 0) FROM conversations`).Scan(&convs); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
	}
	s.idents = newIdentFilter(convs)

	ok = true
	scan, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.identsStop, s.identsDone = stop, make(chan struct{})
	go s.fillIdents(scan)
	go s.writer()
	if background {
		go s.checkpointer(s.ckDB, o.CheckpointInterval, s.ckStop)
	}
	return s, nil
}

// migrate brings the schema to the latest embedded version.
func (s *Store) migrate(ctx context.Context) error {
	p, err := goose.NewProvider(goose.DialectSQLite3, s.w, Migrations(),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	for _, r := range res {
		s.log.Info("sqlite: migrated", "version", r.Source.Version,
			"file", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// Ping checks that the store is open and its file readable.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed.Load() {
		return core.ErrClosed
	}
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return s.readErr(err, "ping")
	}
	return nil
}

// CommitStats reports the writer's commits and the writes they held since
// Open (group commit: writes per commit), for /metrics.
func (s *Store) CommitStats() (commits, writes int64) {
	return s.commits.Load(), s.committed.Load()
}

// Close stops accepting writes, commits those already queued, and closes the
// database. It is idempotent; later calls to any method return core.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.isClosed.Store(true)
		close(s.ops)
		s.mu.Unlock()
		<-s.done
		s.identsStop()
		<-s.identsDone
		if s.ckStop != nil {
			close(s.ckStop)
			<-s.ckDone
		}
		s.closeErr = s.closeDBs()
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	for _, st := range s.wst {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, st := range s.rst {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, s.adhoc.close())
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.ckDB != nil {
		errs = append(errs, s.ckDB.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	errs = append(errs, s.lock.release()) // after the databases: no write may follow
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

var _ core.Store = (*Store)(nil)
