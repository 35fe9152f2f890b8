package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// Checkpoints. In WAL mode a commit appends the changed pages to the WAL;
// a checkpoint copies them back into the database file. SQLite's automatic
// checkpoint does that inside the COMMIT that takes the WAL past 1,000
// pages, on the single writer's path: in the server's profile of a
// closed-loop run it was a sixth of the writer's time, with every write
// queued behind it. The checkpointer does it instead from a connection of
// its own, in the PASSIVE mode SQLite's automatic checkpoint uses, which
// never blocks the writer or a reader. Durability is unchanged: a commit is
// durable in the WAL (store.sync) before its caller hears of it, and the
// checkpoint connection syncs the database file at the same level.
//
// Running at most once per Options.CheckpointInterval also means a page
// changed by many commits in between (an index page every message touches)
// is copied once, not once per 1,000 pages of WAL.

// DefaultCheckpointInterval is the default Options.CheckpointInterval.
const DefaultCheckpointInterval = 250 * time.Millisecond

// backstopBytes is the writer's own automatic checkpoint while the
// checkpointer runs: it only fires if the checkpointer falls this far
// behind (twice restartBytes), so the WAL stays bounded whatever happens.
const backstopBytes = 2 * restartBytes

// ckStats is what the checkpointer has done, for tests and logs.
type ckStats struct {
	runs      atomic.Int64 // checkpoints completed
	log       atomic.Int64 // WAL frames at the last one
	copied    atomic.Int64 // of which copied into the database file
	lastError atomic.Value // error of the last failed checkpoint, if any
	restarts  atomic.Int64 // the writer's catch-up checkpoints that copied every frame (see rewind)
	restartAt atomic.Int64 // WAL frames that call for one: restartBytes in pages
}

// checkpointer runs a PASSIVE checkpoint on db after writes have been
// committed (s.wrote), at most once per every, until stop is closed. It
// closes s.ckDone when it returns.
func (s *Store) checkpointer(db *sql.DB, every time.Duration, stop <-chan struct{}) {
	defer close(s.ckDone)
	pause := time.NewTimer(every)
	pause.Stop()
	for {
		select {
		case <-s.wrote:
		case <-stop:
			return
		}
		if err := s.checkpoint(db); err != nil {
			s.ck.lastError.Store(err)
			s.log.Error("sqlite: checkpoint", "err", err)
		}
		pause.Reset(every)
		select {
		case <-pause.C:
		case <-stop:
			pause.Stop()
			return
		}
	}
}

// ckBusyTimeout is how long (ms) the checkpointer's connection waits for a
// lock. Its PASSIVE checkpoints never wait; the timeout only bounds the
// locks it takes to open the database.
const ckBusyTimeout = 20

// restartBytes is the WAL length at which the writer, once a checkpoint
// has copied the WAL, catches up and lets it start over (see checkpoint);
// SQLite counts the WAL in frames of one page each, so Open turns it into
// frames of the database's page size. Each catch-up holds the writer for
// two fsyncs (3–22 ms on the bench machine) and the writes queued behind it
// then commit as one large batch: at 5,000 messages/s each catch-up made
// 45–65 messages late. With 4 KB pages, a restart at 4,096 pages came every
// 300 ms; 16,384 (every ~1 s) made the open loop's p99 16–22 ms instead of
// 20–33; 65,536 (256 MB, every ~4 s) cut the messages catch-ups delay from
// ~930 to ~350 a run, p99 median 14.3 → 13.1 ms (BENCHMARKS.md). The WAL
// file keeps its largest size once reached: up to this much disk under a
// steady stream of writes (twice that after a backstop checkpoint). Where
// writes pause long enough for a pass to copy the whole WAL, the next write
// starts it over and it stays small. A journal_size_limit to give the space
// back was tried: the writer's next commit truncated the file, 80–100 ms at
// every catch-up.
const restartBytes = 256 << 20

// checkpoint runs a PASSIVE checkpoint (a few, when the WAL is long: see
// below). A busy result (the writer's backstop checkpoint is running) is
// not an error: the next run catches up.
//
// Under a steady stream of writes a PASSIVE checkpoint never lets the WAL
// start over: SQLite rewinds it only when a write transaction begins with
// every frame already copied, and by the time the checkpointer is done the
// writer has appended more. The WAL then grew to the backstop, and the
// writer's own checkpoint, inside a COMMIT, did the copying and the fsync
// with every write queued behind it. So once the WAL is restartBytes long
// and a checkpoint has copied every frame it found (no reader holds an
// older snapshot), the checkpointer asks the writer to catch up (rewind):
// between two batches the writer copies the few frames committed since,
// and its next transaction starts the WAL over.
//
// A RESTART checkpoint from this connection did the same, and made the open
// loop's tail (BENCHMARKS.md): it takes the write lock, and a writer that
// finds the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 ms…),
// whether or not the lock has been released meanwhile. Commits took
// 12–50 ms around every RESTART; with the catch-up on the writer's own
// connection nothing waits for a lock.
func (s *Store) checkpoint(db *sql.DB) error {
	busy, log, copied, err := walCheckpoint(db, "PASSIVE")
	if err != nil {
		return err
	}
	if busy != 0 {
		return nil
	}
	s.ck.runs.Add(1)
	s.ck.log.Store(log)
	s.ck.copied.Store(copied)
	at := s.ck.restartAt.Load()
	if copied != log || at <= 0 || log < at {
		return nil
	}
	// Leave the writer as little as possible to copy and sync: each pass
	// copies what was committed during the one before, fewer frames each
	// time, until a pass finds only a few new ones.
	for range catchUpPasses {
		busy, next, copied, err := walCheckpoint(db, "PASSIVE")
		if err != nil {
			return err
		}
		if busy != 0 || copied != next {
			return nil // the backstop is running, or a reader holds an older snapshot: not now
		}
		grew := next - log
		log = next
		if grew <= catchUpFrames {
			break
		}
	}
	s.rewind.Store(true)
	return nil
}

// The checkpointer's passes before it asks the writer to catch up, and
// the new frames after which it stops early (see checkpoint).
const (
	catchUpPasses = 4
	catchUpFrames = 64
)

// catchUp is the writer's side of rewinding the WAL (see checkpoint): run
// between batches, on the writer's connection, once the checkpointer has
// copied most of the WAL. Its PASSIVE checkpoint copies what was committed
// since and syncs, and never waits for a lock: if a reader still uses the
// WAL, fewer frames are copied and the WAL simply goes on; the
// checkpointer asks again later.
func (s *Store) catchUp() {
	s.rewind.Store(false)
	busy, log, copied, err := walCheckpoint(s.w, "PASSIVE")
	if err != nil {
		s.ck.lastError.Store(err)
		s.log.Error("sqlite: checkpoint", "err", err)
		return
	}
	if busy == 0 && copied == log {
		s.ck.restarts.Add(1)
	}
}

func walCheckpoint(db *sql.DB, mode string) (busy, log, copied int64, err error) {
	err = db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &log, &copied)
	if err != nil {
		err = fmt.Errorf("sqlite: checkpoint: %w", err)
	}
	return busy, log, copied, err
}

// noteWrite tells the checkpointer that a batch was committed. It never
// blocks the writer: one pending note is enough.
func (s *Store) noteWrite() {
	if s.wrote == nil {
		return
	}
	select {
	case s.wrote <- struct{}{}:
	default:
	}
}
