package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/kefuhq/kefu/core"
)

// op is one write waiting for the writer: fn runs inside the batch's
// transaction and done receives its outcome after the commit.
type op struct {
	ctx  context.Context
	fn   func(w *wtx) error
	done chan error
}

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
		return ctx.Err()
	}
}

// writer owns the writer connection. It takes the first waiting op and every
// other one already queued, up to the batch size, and commits them together.
// It returns when Close has closed ops and the queue is drained.
func (s *Store) writer() {
	defer close(s.done)
	batch := make([]*op, 0, s.batch)
	errs := make([]error, s.batch)
	for o := range s.ops {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < s.batch {
			select {
			case o, ok := <-s.ops:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		clear(errs)
		s.commit(batch, errs[:len(batch)])
		for i, o := range batch {
			o.done <- errs[i]
		}
		clear(batch)
	}
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
		if err := o.ctx.Err(); err != nil {
			errs[0] = err
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
			if err := o.ctx.Err(); err != nil {
				errs[i] = err // the caller has gone; leave its write undone
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
