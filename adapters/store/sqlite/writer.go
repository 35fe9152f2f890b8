package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/claim"
)

// op is one write waiting for the writer: fn runs inside the batch's
// transaction and done receives its outcome after the commit.
type op struct {
	ctx   context.Context
	fn    func(w *wtx) error
	done  chan error
	owner claim.Claim // the writer's (started) or the caller's (given up)
}

// start claims o for the writer. It is false, and o must not run, when its
// caller has gone (its ctx is done) or gave up on it.
func (o *op) start() bool { return o.ctx.Err() == nil && o.owner.Start() }

// wtx is the writer's view of the batch transaction. Ops use its prepared
// statements, bound to the transaction once per batch.
type wtx struct {
	s   *Store
	tx  *sql.Tx
	ctx context.Context
	st  [numWStmts]*sql.Stmt
}

func (w *wtx) stmt(id wstmt) *sql.Stmt {
	if w.st[id] == nil {
		w.st[id] = w.tx.StmtContext(w.ctx, w.s.wst[id])
	}
	return w.st[id]
}

func (w *wtx) exec(id wstmt, args ...any) (sql.Result, error) {
	return w.stmt(id).ExecContext(w.ctx, args...)
}

func (w *wtx) queryRow(id wstmt, args ...any) *sql.Row {
	return w.stmt(id).QueryRowContext(w.ctx, args...)
}

// do runs fn in the writer and waits for its commit. If ctx ends first, do
// returns ctx.Err() and fn may still run and commit; fn must not touch
// anything the caller reads after an error.
func (s *Store) do(ctx context.Context, fn func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return core.ErrClosed
	}
	select {
	case s.ops <- o:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.owner.Abandon() {
			return ctx.Err() // it will not run
		}
		// The writer has run it, or is running it: what happened to it,
		// committed or not, is the answer, not the caller's impatience.
		return <-o.done
	}
}

// maxYields bounds how often the writer yields to let more writes join a
// batch before committing it (see writer).
const maxYields = 4

// writer owns the writer connection. It takes the first waiting op and every
// other one already queued, up to the batch size, and commits them together.
// It returns when Close has closed ops and the queue is drained.
//
// Before committing a batch that is not full, the writer yields the
// processor (runtime.Gosched) and takes what arrived meanwhile, until a
// yield brings nothing new (at most maxYields times). The callers a commit
// answers are runnable but have not run yet: each must take its answer,
// finish its request and read the next one before its next write reaches
// the queue. Committing at once left them behind: in a closed-loop run with
// 200 writers the batches averaged 9 writes; yielding first let them join,
// and batches averaged about 100 (BENCHMARKS.md). A commit costs a WAL
// write of every page it changed, so ten times fewer commits write far
// fewer pages per message. When nothing else is runnable (a single write)
// the yield returns at once, so an idle store adds no latency.
func (s *Store) writer() {
	defer close(s.done)
	batch := make([]*op, 0, s.batch)
	errs := make([]error, s.batch)
	for o := range s.ops {
		batch = append(batch[:0], o)
		for yields := 0; ; yields++ {
			had := len(batch)
			batch = s.fill(batch)
			if len(batch) == s.batch || yields == maxYields || (yields > 0 && len(batch) == had) {
				break
			}
			runtime.Gosched()
		}
		clear(errs)
		s.commit(batch, errs[:len(batch)])
		s.commits.Add(1)
		s.committed.Add(int64(len(batch)))
		s.noteWrite()
		for i, o := range batch {
			o.done <- errs[i]
		}
		clear(batch)
		if s.rewind.Load() {
			s.catchUp()
		}
	}
}

// fill appends the ops already queued to batch, up to the batch size,
// without waiting.
func (s *Store) fill(batch []*op) []*op {
	for len(batch) < s.batch {
		select {
		case o, ok := <-s.ops:
			if !ok {
				return batch
			}
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// commit runs batch in one transaction and leaves each op's outcome in errs.
// Each op runs under its own savepoint, so a failing op is rolled back alone
// and the others still commit. A batch of one needs no savepoint: its failure
// rolls back the transaction.
func (s *Store) commit(batch []*op, errs []error) {
	ctx := context.Background()
	fail := func(err error) {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		s.cache.reset()
		s.log.Error("sqlite: begin", "err", err)
		fail(fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	w := &wtx{s: s, tx: tx, ctx: ctx}
	abort := func(err error) {
		s.log.Error("sqlite: batch aborted", "ops", len(batch), "err", err)
		_ = tx.Rollback()
		s.cache.reset()
		fail(err)
	}

	if len(batch) == 1 {
		o := batch[0]
		if !o.start() {
			errs[0] = o.ctx.Err()
			_ = tx.Rollback()
			return
		}
		s.cache.begin()
		if err := o.fn(w); err != nil {
			errs[0] = err
			_ = tx.Rollback()
			s.cache.undo()
			return
		}
	} else {
		for i, o := range batch {
			if !o.start() {
				errs[i] = o.ctx.Err() // the caller has gone; leave its write undone
				continue
			}
			if _, err := w.exec(stSavepoint); err != nil {
				abort(fmt.Errorf("sqlite: savepoint: %w", err))
				return
			}
			s.cache.begin()
			if err := o.fn(w); err != nil {
				errs[i] = err
				s.cache.undo()
				if _, rerr := w.exec(stRollbackTo); rerr != nil {
					// The transaction itself is gone (SQLite rolls back
					// on some errors, such as a full disk).
					abort(fmt.Errorf("sqlite: rollback to savepoint after %w: %w", err, rerr))
					return
				}
			}
			if _, err := w.exec(stRelease); err != nil {
				abort(fmt.Errorf("sqlite: release savepoint: %w", err))
				return
			}
		}
	}
	if err := tx.Commit(); err != nil {
		s.cache.reset()
		s.log.Error("sqlite: commit", "ops", len(batch), "err", err)
		fail(fmt.Errorf("sqlite: commit: %w", err))
	}
}
