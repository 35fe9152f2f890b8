package sqlite

import (
	"context"
	"fmt"
	"testing"
)

// TestAdhocStmts: ad hoc reads reuse one statement per SQL text, the cache
// stops at maxAdhocStmts (reads past it are prepared each time and still
// answer), and closing the store closes the cached statements.
func TestAdhocStmts(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Options{})
	read := func(q string, arg int) int {
		t.Helper()
		rows, err := s.query(ctx, q, arg)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n int
		if !rows.Next() || rows.Scan(&n) != nil {
			t.Fatalf("%s: no row (%v)", q, rows.Err())
		}
		return n
	}
	for i := range maxAdhocStmts + 10 {
		q := fmt.Sprintf("SELECT ? + %d", i)
		if got := read(q, 1); got != i+1 {
			t.Fatalf("%s = %d", q, got)
		}
		if got := read(q, 2); got != i+2 { // the cached statement, new argument
			t.Fatalf("%s again = %d", q, got)
		}
	}
	s.adhoc.mu.Lock()
	n := len(s.adhoc.m)
	s.adhoc.mu.Unlock()
	if n != maxAdhocStmts {
		t.Fatalf("%d statements cached, want the bound %d", n, maxAdhocStmts)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.adhoc.mu.Lock()
	n, closed := len(s.adhoc.m), s.adhoc.closed
	s.adhoc.mu.Unlock()
	if n != 0 || !closed {
		t.Fatalf("after Close: %d statements cached, closed %v", n, closed)
	}
}
