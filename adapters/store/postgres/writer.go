package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// Control statements around each op. The savepoint keeps one op's failure
// its own; an op can also roll back its own writes and go on (undo).
const (
	sqlBegin      = `BEGIN; SELECT 1 FROM write_lock FOR UPDATE`
	sqlSavepoint  = `SAVEPOINT op`
	sqlRollbackTo = `ROLLBACK TO SAVEPOINT op`
	sqlRelease    = `RELEASE SAVEPOINT op`
	sqlCommit     = `COMMIT`
)

// wtx is the writer's view of the batch transaction. Control statements
// (savepoints) are not sent on their own: they wait in pre and go out in the
// same round trip as the next statement, as one pipeline.
type wtx struct {
	s    *Store
	conn *pgx.Conn
	ctx  context.Context
	pre  []string
	sent int   // statements sent so far
	err  error // a control statement failed: the transaction is unusable
}

// control queues a control statement.
func (w *wtx) control(q string) { w.pre = append(w.pre, q) }

// undo rolls back what the running op has written so far; the op goes on.
func (w *wtx) undo() { w.control(sqlRollbackTo) }

// rowScanner is a row to scan: pgx.Row, or the last result of a pipeline.
type rowScanner interface{ Scan(dest ...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// batchRow is a query's row at the end of a pipeline; scanning it ends the
// pipeline.
type batchRow struct {
	br  pgx.BatchResults
	row pgx.Row
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// send starts a pipeline of the queued control statements followed by q,
// and reads the control statements' results.
func (w *wtx) send(q string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	for _, c := range w.pre {
		b.Queue(c)
	}
	n := len(w.pre)
	w.pre = w.pre[:0]
	b.Queue(q, args...)
	br := w.conn.SendBatch(w.ctx, b)
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			w.err = fmt.Errorf("postgres: savepoint: %w", err)
			return nil, w.err
		}
	}
	return br, nil
}

func (w *wtx) queryRow(q string, args ...any) rowScanner {
	w.sent++
	if len(w.pre) == 0 {
		return w.conn.QueryRow(w.ctx, q, args...)
	}
	br, err := w.send(q, args)
	if err != nil {
		return errRow{err}
	}
	return batchRow{br: br, row: br.QueryRow()}
}

func (w *wtx) exec(q string, args ...any) (pgconn.CommandTag, error) {
	w.sent++
	if len(w.pre) == 0 {
		return w.conn.Exec(w.ctx, q, args...)
	}
	br, err := w.send(q, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// flush sends the queued control statements, ending with last, in one
// simple-protocol round trip, and returns the command tag of the last one.
func (w *wtx) flush(last string) (pgconn.CommandTag, error) {
	q := strings.Join(append(w.pre, last), "; ")
	w.pre = w.pre[:0]
	return w.conn.Exec(w.ctx, q)
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

// writer takes the first waiting op and every other one already queued, up
// to the batch size, and commits them together. It returns when Close has
// closed ops and the queue is drained.
func (s *Store) writer() {
	defer close(s.done)
	batch := make([]*op, 0, s.batch)
	errs := make([]error, s.batch)
	for o := range s.ops {
		batch = s.fill(append(batch[:0], o))
		batch = s.commit(batch, errs)
		for i, o := range batch {
			o.done <- errs[i]
		}
		clear(batch)
		clear(errs)
	}
}

// fill adds the ops already waiting to batch, up to the batch size.
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
// Once it holds the write lock it takes in the ops that arrived meanwhile,
// and returns the batch it ran. Each op runs under its own savepoint, so a
// failing op is rolled back alone and the others still commit.
func (s *Store) commit(batch []*op, errs []error) []*op {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	fail := func(err error) {
		for i := range batch {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	pc, err := s.wpool.Acquire(ctx)
	if err != nil {
		s.log.Error("postgres: no connection for a batch", "ops", len(batch), "err", err)
		fail(fmt.Errorf("postgres: connect: %w", err))
		return batch
	}
	// A connection left inside a transaction (an error below) is closed,
	// not reused, by Release.
	defer pc.Release()
	w := &wtx{s: s, conn: pc.Conn(), ctx: ctx}
	tag, err := w.conn.Exec(ctx, sqlBegin)
	if err == nil && tag.RowsAffected() != 1 {
		err = errors.New("the write_lock table has lost its row") // IDs would not follow commit order
	}
	if err != nil {
		s.log.Error("postgres: begin", "ops", len(batch), "err", err)
		fail(fmt.Errorf("postgres: begin: %w", err))
		return batch
	}
	batch = s.fill(batch)

	for i, o := range batch {
		if !o.start() {
			errs[i] = o.ctx.Err() // the caller has gone; leave its write undone
			continue
		}
		mark, sent := len(w.pre), w.sent
		w.control(sqlSavepoint)
		err := o.fn(w)
		if w.err != nil {
			s.log.Error("postgres: batch aborted", "ops", len(batch), "err", w.err)
			fail(w.err)
			return batch
		}
		if w.sent == sent { // nothing was sent: no savepoint needed
			w.pre = w.pre[:mark]
			errs[i] = err
			continue
		}
		if err != nil {
			errs[i] = err
			w.control(sqlRollbackTo)
			if w.conn.PgConn().TxStatus() == 'E' {
				// The transaction is in the failed state, where even
				// preparing the next op's statement fails: roll back now.
				if _, err := w.flush(sqlRelease); err != nil {
					s.log.Error("postgres: batch aborted", "ops", len(batch), "err", err)
					fail(fmt.Errorf("postgres: rollback to savepoint: %w", err))
					return batch
				}
				continue
			}
		}
		w.control(sqlRelease)
	}
	tag, err = w.flush(sqlCommit)
	if err == nil && tag.String() != "COMMIT" {
		// COMMIT of a failed transaction answers ROLLBACK, not an error.
		err = fmt.Errorf("transaction rolled back (%s)", tag)
	}
	if err != nil {
		s.log.Error("postgres: commit", "ops", len(batch), "err", err)
		fail(fmt.Errorf("postgres: commit: %w", err))
	}
	return batch
}
