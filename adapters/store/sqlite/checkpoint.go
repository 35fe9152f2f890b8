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

// backstopPages is the writer's own automatic checkpoint while the
// checkpointer runs: it only fires if the checkpointer falls this far
// behind (about 40 MB of WAL), so the WAL stays bounded whatever happens.
const backstopPages = 10000

// ckStats is what the checkpointer has done, for tests and logs.
type ckStats struct {
	runs      atomic.Int64 // checkpoints completed
	log       atomic.Int64 // WAL frames at the last one
	copied    atomic.Int64 // of which copied into the database file
	lastError atomic.Value // error of the last failed checkpoint, if any
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

// checkpoint runs one PASSIVE checkpoint. A busy result (the writer's
// backstop checkpoint is running) is not an error: the next one catches up.
func (s *Store) checkpoint(db *sql.DB) error {
	var busy, log, copied int64
	err := db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &copied)
	if err != nil {
		return fmt.Errorf("sqlite: checkpoint: %w", err)
	}
	if busy == 0 {
		s.ck.runs.Add(1)
		s.ck.log.Store(log)
		s.ck.copied.Store(copied)
	}
	return nil
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
