package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/internal/testenv"
)

// freshSchema creates a schema of its own for one test in the database
// KEFU_TEST_POSTGRES names, drops it when the test ends, and returns a DSN
// whose search_path is that schema.
func freshSchema(t testing.TB) string {
	t.Helper()
	base := testenv.Postgres(t)
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "kefu_test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", testenv.PostgresVar, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	dsn := withParam(t, base, "search_path", schema)
	if _, bench := t.(*testing.B); !bench {
		// Tests need no durability; benchmarks measure the real thing.
		dsn = withParam(t, dsn, "synchronous_commit", "off")
	}
	return dsn
}

// withParam sets a run-time parameter in a DSN, a URL or key=value
// pairs.
func withParam(t testing.TB, dsn, param, value string) string {
	t.Helper()
	if !strings.Contains(dsn, "://") {
		return dsn + " " + param + "=" + value
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(param, value)
	u.RawQuery = q.Encode()
	return u.String()
}
