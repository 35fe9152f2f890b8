// Package postgres is the media backend for clusters (config
// media.driver: postgres): it keeps objects in kefu's PostgreSQL database,
// the one the store uses (store.dsn), so every node reads what any node
// saved, and a database backup holds the media with the messages that name
// them. It implements media.Backend.
//
// # Layout
//
// The tables are created by the store's migrations
// (adapters/store/postgres/migrations/00006_media.sql): Open refuses a
// database that lacks them. An object is a blob, a row of media_blobs, whose
// bytes are rows of media_parts of Options.PartSize bytes each (256 KiB by
// default; the last one shorter), and media_objects maps each key to its
// live blob. Memory stays bounded whatever the size of a file: Put holds one
// part at a time, and a reader one part, fetched when the reading reaches
// it (readers also seek, so HTTP ranges are served part by part).
//
// # Atomicity and durability
//
// A single-part object (most images and every preview) is written in one
// transaction. A larger one is written part by part into a new blob in
// state 'writing', which no key names, each part committed on its own, so
// that no transaction stays open for as long as a slow client takes to
// upload; a last short transaction then makes the blob live and points the
// key at it. Until that commits, readers see the previous object or none;
// after it, the whole new one; an object is durable once Put returns nil
// (the database's synchronous_commit decides what a commit survives, as it
// does for messages).
//
// Concurrent Puts of one key are ordered by the lock on the key's
// media_objects row: the last to commit wins, and each one drops every other
// live blob of the key when it commits, so exactly one stays live.
//
// # Replaced and deleted objects
//
// Put over an existing key and Delete do not remove the old bytes at once:
// they mark the blob 'dropped', and readers opened before go on reading it.
// Dropped blobs are deleted, with their parts, Options.ReadGrace (1 hour)
// later; a reader still reading one after that gets an error, never a
// truncated file. Blobs left 'writing' by a Put that failed or a node that
// crashed are deleted after Options.StaleWrite (24 hours). Every node sweeps
// now and then after a Put or a Delete (and when it opens the backend); the
// times come from the database's clock.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Defaults of Options.
const (
	DefaultPartSize   = 256 << 10
	DefaultReadGrace  = time.Hour
	DefaultStaleWrite = 24 * time.Hour

	// MaxPartSize bounds Options.PartSize: PostgreSQL's 1 GB limit on a
	// value is far above it, but a part is held in memory per reader.
	MaxPartSize = 16 << 20
)

const (
	sweepEvery   = time.Minute      // how often a busy backend sweeps at most
	sweepBatch   = 64               // blobs deleted per statement
	sweepTimeout = 30 * time.Second // one sweep, all batches
	partTimeout  = 30 * time.Second // fetching one part for an open reader
)

// Options configures Open. The zero value of every field but DSN is usable.
type Options struct {
	// DSN is the PostgreSQL connection string of kefu's store (store.dsn),
	// as pgx reads it: pool_max_conns, search_path and other parameters may
	// be given in it.
	DSN string
	// PartSize is the size of one stored part in bytes, 1 to MaxPartSize;
	// 0 means DefaultPartSize. It applies to objects written from now on;
	// each object remembers its own.
	PartSize int
	// ReadGrace is how long a replaced or deleted object's bytes are kept
	// for readers opened before; 0 means DefaultReadGrace.
	ReadGrace time.Duration
	// StaleWrite is how old an unfinished write must be before its parts
	// are deleted as left behind by a crash; 0 means DefaultStaleWrite. A
	// Put that takes longer fails.
	StaleWrite time.Duration
	// Logger receives the errors of background sweeps; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Backend is a media.Backend in PostgreSQL. Create it with Open and release
// it with Close. It is safe for concurrent use.
type Backend struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	partSize int
	grace    time.Duration
	stale    time.Duration

	closed    atomic.Bool
	lastSweep atomic.Int64 // unix nanoseconds of the last sweep started
	sweeping  atomic.Bool  // a background sweep is running
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex     // orders starting a sweep (wg.Add) before Close's wg.Wait
	stopped   bool           // under mu: Close has begun
	wg        sync.WaitGroup // background sweeps
	closeOnce sync.Once
}

// Open connects to the database o.DSN names, checks that its schema has the
// media tables (the PostgreSQL store's migrations create them: open the
// store on the same database first, as kefu serve does) and sweeps what is
// due.
func Open(ctx context.Context, o Options) (*Backend, error) {
	var errs []error
	if o.DSN == "" {
		errs = append(errs, errors.New("a DSN is required"))
	}
	if o.PartSize < 0 || o.PartSize > MaxPartSize {
		errs = append(errs, fmt.Errorf("part size %d: must be 1 to %d bytes", o.PartSize, MaxPartSize))
	}
	if o.ReadGrace < 0 {
		errs = append(errs, fmt.Errorf("read grace %s: must not be negative", o.ReadGrace))
	}
	if o.StaleWrite < 0 {
		errs = append(errs, fmt.Errorf("stale write %s: must not be negative", o.StaleWrite))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("media/postgres: %w: %w", core.ErrInvalid, err)
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.ReadGrace == 0 {
		o.ReadGrace = DefaultReadGrace
	}
	if o.StaleWrite == 0 {
		o.StaleWrite = DefaultStaleWrite
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("media/postgres: %w: DSN: %w", core.ErrInvalid, err)
	}
	params := cfg.ConnConfig.RuntimeParams
	for k, v := range map[string]string{
		"application_name": "kefu-media",
		// Transactions here are short; one whose node vanished ends.
		"idle_in_transaction_session_timeout": "30s",
	} {
		if _, ok := params[k]; !ok {
			params[k] = v
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("media/postgres: connect: %w", err)
	}
	var ok bool
	err = pool.QueryRow(ctx, `SELECT to_regclass('media_objects') IS NOT NULL
		AND to_regclass('media_blobs') IS NOT NULL AND to_regclass('media_parts') IS NOT NULL`).Scan(&ok)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("media/postgres: connect: %w", err)
	}
	if !ok {
		pool.Close()
		return nil, errors.New("media/postgres: the database has no media tables (media_objects, media_blobs, " +
			"media_parts): the PostgreSQL store's migrations create them, so media.driver postgres needs " +
			"store.driver postgres on the same database")
	}
	b := &Backend{pool: pool, log: o.Logger, partSize: o.PartSize, grace: o.ReadGrace, stale: o.StaleWrite}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.lastSweep.Store(time.Now().UnixNano())
	if _, err := b.Sweep(ctx); err != nil {
		b.cancel()
		pool.Close()
		return nil, err
	}
	return b, nil
}

// checkOpen fails after Close.
func (b *Backend) checkOpen() error {
	if b.closed.Load() {
		return fmt.Errorf("media/postgres: %w", core.ErrClosed)
	}
	return nil
}

// precheck is what every call checks first: the key, that the backend is
// open and that ctx has not ended.
func (b *Backend) precheck(ctx context.Context, key string) error {
	if err := media.CheckBackendKey(key); err != nil {
		return err
	}
	if err := b.checkOpen(); err != nil {
		return err
	}
	return ctx.Err()
}

// Put implements media.Backend.
func (b *Backend) Put(ctx context.Context, key string, r io.Reader) (err error) {
	if err := b.precheck(ctx, key); err != nil {
		return err
	}
	buf := make([]byte, b.partSize)
	n, err := readPart(r, buf)
	if err != nil {
		return fmt.Errorf("media/postgres: put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n < len(buf) { // the whole object is one part: one transaction
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			blob, err := b.newBlob(ctx, tx, key, buf[:n])
			if err != nil {
				return err
			}
			return link(ctx, tx, key, blob, int64(n))
		})
		if err != nil {
			return b.putErr(ctx, key, err)
		}
		b.maybeSweep()
		return nil
	}

	// Several parts, each committed on its own under a blob no key names.
	blob, err := b.newBlob(ctx, b.pool, key, buf)
	if err != nil {
		return b.putErr(ctx, key, err)
	}
	defer func() {
		if err != nil {
			b.discardBlob(ctx, blob)
		}
	}()
	size := int64(n)
	for part := 1; ; part++ {
		n, rerr := readPart(r, buf)
		if rerr != nil {
			return fmt.Errorf("media/postgres: put %s: %w", key, rerr)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n > 0 {
			if _, err := b.pool.Exec(ctx, `INSERT INTO media_parts (blob, part, data) VALUES ($1, $2, $3)`,
				blob, part, buf[:n]); err != nil {
				return b.putErr(ctx, key, err)
			}
			size += int64(n)
		}
		if n < len(buf) {
			break
		}
	}
	if err := ctx.Err(); err != nil { // last moment to give up without storing
		return err
	}
	if err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		return link(ctx, tx, key, blob, size)
	}); err != nil {
		return b.putErr(ctx, key, err)
	}
	b.maybeSweep()
	return nil
}

// putErr is the error of a Put that failed in the database: ctx's own
// error when ctx ended (the database call failed because of it).
func (b *Backend) putErr(ctx context.Context, key string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("media/postgres: put %s: %w", key, err)
}

// readPart fills buf from r as far as r goes: n < len(buf) means r is done.
func readPart(r io.Reader, buf []byte) (int, error) {
	n, err := io.ReadFull(r, buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return n, nil
	}
	return n, err
}

// querier is what newBlob runs on: the pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// newBlob creates a 'writing' blob for key holding first as its part 0 (no
// part when first is empty), and returns its id.
func (b *Backend) newBlob(ctx context.Context, q querier, key string, first []byte) (int64, error) {
	var blob int64
	if len(first) == 0 {
		err := q.QueryRow(ctx, `INSERT INTO media_blobs (key, state, part_size, changed_at)
			VALUES ($1, 'writing', $2, now()) RETURNING blob`, key, b.partSize).Scan(&blob)
		return blob, err
	}
	err := q.QueryRow(ctx, `WITH b AS (
			INSERT INTO media_blobs (key, state, part_size, changed_at)
			VALUES ($1, 'writing', $2, now()) RETURNING blob)
		INSERT INTO media_parts (blob, part, data) SELECT blob, 0, $3 FROM b RETURNING blob`,
		key, b.partSize, first).Scan(&blob)
	return blob, err
}

// errSwept: a write took so long that a sweep deleted its parts.
var errSwept = errors.New("the parts written so far were deleted as stale before the write finished")

// link makes blob, of size bytes, the live object of key, and drops the
// blob that was live before. The upsert locks key's media_objects row, so
// concurrent links of one key run one after the other, and the last
// statement, run after that lock is held, sees every earlier one committed.
func link(ctx context.Context, tx pgx.Tx, key string, blob, size int64) error {
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE media_blobs SET state = 'live', size = $2, changed_at = now()
		WHERE blob = $1 AND state = 'writing'`, blob, size)
	batch.Queue(`INSERT INTO media_objects (key, blob) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET blob = EXCLUDED.blob`, key, blob)
	batch.Queue(`UPDATE media_blobs SET state = 'dropped', changed_at = now()
		WHERE key = $1 AND state = 'live' AND blob <> $2`, key, blob)
	br := tx.SendBatch(ctx, batch)
	tag, err := br.Exec()
	if err == nil && tag.RowsAffected() != 1 {
		err = errSwept
	}
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		_, err = br.Exec()
	}
	return errors.Join(err, br.Close())
}

// discardBlob deletes the parts of a Put that failed, even when ctx has
// ended. If that fails too, a sweep deletes them after StaleWrite.
func (b *Backend) discardBlob(ctx context.Context, blob int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _ = b.pool.Exec(ctx, `DELETE FROM media_blobs WHERE blob = $1 AND state = 'writing'`, blob)
}

// Open implements media.Backend. The reader is an io.ReadSeeker; it fetches
// a part when the reading reaches it, with a timeout of its own (ctx bounds
// only the opening). Close the reader to release its part; reading after
// the backend is closed fails.
func (b *Backend) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := b.precheck(ctx, key); err != nil {
		return nil, 0, err
	}
	r := &reader{b: b, key: key, part: -1}
	var first []byte
	// Part 0 comes with the lookup: a small object is read in one round trip.
	err := b.pool.QueryRow(ctx, `SELECT b.blob, b.size, b.part_size, p.data
		FROM media_objects o
		JOIN media_blobs b ON b.blob = o.blob
		LEFT JOIN media_parts p ON p.blob = b.blob AND p.part = 0
		WHERE o.key = $1`, key).Scan(&r.blob, &r.size, &r.partSize, &first)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("media/postgres: %w: %s", core.ErrNotFound, key)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, 0, cerr
		}
		return nil, 0, fmt.Errorf("media/postgres: open %s: %w", key, err)
	}
	if r.size > 0 {
		if err := r.setPart(0, first, first != nil); err != nil {
			return nil, 0, err
		}
	}
	return r, r.size, nil
}

// reader reads one blob part by part. Like any io.Reader it is for one
// goroutine at a time.
type reader struct {
	b        *Backend
	key      string
	blob     int64
	size     int64
	partSize int64
	off      int64  // next byte to read
	part     int64  // the part buf holds; -1: none
	buf      []byte // that part's bytes
	closed   bool
}

// setPart installs data as part i, after checking it is there and has the
// length part i must have.
func (r *reader) setPart(i int64, data []byte, found bool) error {
	if !found {
		return fmt.Errorf("media/postgres: read %s: part %d is gone: the object was replaced or deleted, "+
			"and readers opened before may read it for %s only", r.key, i, r.b.grace)
	}
	if want := min(r.partSize, r.size-i*r.partSize); int64(len(data)) != want {
		return fmt.Errorf("media/postgres: read %s: part %d holds %d bytes, want %d", r.key, i, len(data), want)
	}
	r.part, r.buf = i, data
	return nil
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("media/postgres: read %s: %w", r.key, core.ErrClosed)
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	i := r.off / r.partSize
	if i != r.part {
		if err := r.fetch(i); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.off-i*r.partSize:])
	r.off += int64(n)
	return n, nil
}

// fetch loads part i.
func (r *reader) fetch(i int64) error {
	if err := r.b.checkOpen(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	r.part, r.buf = -1, nil
	var data []byte
	err := r.b.pool.QueryRow(ctx, `SELECT data FROM media_parts WHERE blob = $1 AND part = $2`,
		r.blob, i).Scan(&data)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("media/postgres: read %s: part %d: %w", r.key, i, err)
	}
	return r.setPart(i, data, err == nil)
}

// Seek implements io.Seeker. Seeking fetches nothing; the next Read does.
func (r *reader) Seek(offset int64, whence int) (int64, error) {
	if r.closed {
		return 0, fmt.Errorf("media/postgres: seek %s: %w", r.key, core.ErrClosed)
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("media/postgres: seek %s: invalid whence %d", r.key, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("media/postgres: seek %s: negative position %d", r.key, abs)
	}
	r.off = abs
	return abs, nil
}

// Close implements io.Closer. It is idempotent.
func (r *reader) Close() error {
	r.closed, r.buf = true, nil
	return nil
}

// Delete implements media.Backend. The bytes stay for ReadGrace, for
// readers opened before.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.precheck(ctx, key); err != nil {
		return err
	}
	tag, err := b.pool.Exec(ctx, `WITH d AS (DELETE FROM media_objects WHERE key = $1 RETURNING blob)
		UPDATE media_blobs b SET state = 'dropped', changed_at = now() FROM d WHERE b.blob = d.blob`, key)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("media/postgres: delete %s: %w", key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("media/postgres: %w: %s", core.ErrNotFound, key)
	}
	b.maybeSweep()
	return nil
}

// Sweep deletes, with their parts, the blobs dropped more than ReadGrace
// ago and those left 'writing' more than StaleWrite ago, and returns how
// many. The backend calls it itself (on Open, and at most once a minute
// after a Put or a Delete); several nodes sweeping at once skip each
// other's rows.
func (b *Backend) Sweep(ctx context.Context) (int64, error) {
	if err := b.checkOpen(); err != nil {
		return 0, err
	}
	var total int64
	for _, c := range []struct {
		state string
		age   time.Duration
	}{{"dropped", b.grace}, {"writing", b.stale}} {
		for {
			tag, err := b.pool.Exec(ctx, `DELETE FROM media_blobs WHERE blob IN (
					SELECT blob FROM media_blobs
					WHERE state = $1 AND changed_at < now() - make_interval(secs => $2)
					ORDER BY changed_at LIMIT $3 FOR UPDATE SKIP LOCKED)`,
				c.state, c.age.Seconds(), sweepBatch)
			if err != nil {
				return total, fmt.Errorf("media/postgres: sweep: %w", err)
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() < sweepBatch {
				break
			}
		}
	}
	return total, nil
}

// maybeSweep starts a background sweep when none ran for sweepEvery.
func (b *Backend) maybeSweep() {
	last := b.lastSweep.Load()
	now := time.Now().UnixNano()
	if now-last < int64(sweepEvery) || !b.lastSweep.CompareAndSwap(last, now) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped || !b.sweeping.CompareAndSwap(false, true) {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.sweeping.Store(false)
		ctx, cancel := context.WithTimeout(b.ctx, sweepTimeout)
		defer cancel()
		if _, err := b.Sweep(ctx); err != nil && b.ctx.Err() == nil {
			b.log.Warn("media/postgres: sweep failed", "err", err)
		}
	}()
}

// Close waits for a running sweep to stop and closes the connections.
// Calls after Close, and reads from readers opened before, fail with
// core.ErrClosed. Close is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		b.cancel()
		b.wg.Wait()
		b.pool.Close()
	})
	return nil
}

var (
	_ media.Backend = (*Backend)(nil)
	_ io.Closer     = (*Backend)(nil)
	_ io.ReadSeeker = (*reader)(nil)
)
