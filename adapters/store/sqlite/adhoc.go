package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxAdhocStmts bounds the cache of ad hoc reads' statements. The SQL of
// such reads varies only with which filters are set, so a store sees a few
// dozen shapes; past the bound, reads are prepared each time.
const maxAdhocStmts = 128

// adhocStmts caches the prepared statements of reads whose SQL is built
// per call (Conversations' filters, the batch reads of lists). Preparing
// was most of such a read's cost: a visitor's newest conversation, read at
// every session start and WebSocket hello, took about 50 µs, nearly all
// in SQLite's parser (BenchmarkConversationsByIdentity, BENCHMARKS.md).
type adhocStmts struct {
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	closed bool
}

// query runs the read q on the read pool through a cached statement.
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.adhoc.stmt(ctx, s.r, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.r.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// stmt returns q's cached statement, preparing it on first use; nil (and
// no error) when the cache is full or closed.
func (c *adhocStmts) stmt(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.m[q]
	full := c.closed || len(c.m) >= maxAdhocStmts
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	if full {
		return nil, nil
	}
	// Prepared outside the lock: two first uses may both prepare, and the
	// second closes its own.
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.m[q]; ok {
		_ = st.Close()
		return cur, nil
	}
	if c.closed || len(c.m) >= maxAdhocStmts {
		_ = st.Close() // filled meanwhile by other first uses
		return nil, nil
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[q] = st
	return st, nil
}

// close closes every cached statement; later reads prepare their own.
func (c *adhocStmts) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for q, st := range c.m {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.m, q)
	}
	return first
}
