// Package testenv tells tests where the servers they need are: PostgreSQL,
// Redis and NATS, named by the environment variables KEFU_TEST_POSTGRES,
// KEFU_TEST_REDIS and KEFU_TEST_NATS.
//
// A test that needs a server calls the matching function, which returns the
// server's URL. When the variable is unset, the test is skipped with a
// message naming it, unless KEFU_REQUIRE_SERVICES=1 (CI sets it), which
// turns the skip into a failure: a CI run must not pass by skipping what it
// was meant to test.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"
)

// The environment variables read by this package.
const (
	PostgresVar = "KEFU_TEST_POSTGRES" // e.g. postgres://kefu:kefu@127.0.0.1:5432/kefu_test?sslmode=disable
	RedisVar    = "KEFU_TEST_REDIS"    // e.g. redis://127.0.0.1:6379/0
	NATSVar     = "KEFU_TEST_NATS"     // e.g. nats://127.0.0.1:4222
	RequireVar  = "KEFU_REQUIRE_SERVICES"
)

// Postgres returns KEFU_TEST_POSTGRES, or skips t (fails it when services
// are required) when it is unset.
func Postgres(t testing.TB) string { t.Helper(); return Service(t, PostgresVar) }

// Redis returns KEFU_TEST_REDIS, or skips t (fails it when services are
// required) when it is unset.
func Redis(t testing.TB) string { t.Helper(); return Service(t, RedisVar) }

// NATS returns KEFU_TEST_NATS, or skips t (fails it when services are
// required) when it is unset.
func NATS(t testing.TB) string { t.Helper(); return Service(t, NATSVar) }

// Service returns the value of the environment variable name. When it is
// empty, t is skipped with a message naming the variable, or, when
// KEFU_REQUIRE_SERVICES=1, fails.
func Service(t testing.TB, name string) string {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		return v
	}
	if Required() {
		t.Fatalf("%s is not set and %s=1: this test needs the server it names", name, RequireVar)
	}
	t.Skipf("%s is not set: set it to run this test against a real server", name)
	return ""
}

// Required reports whether KEFU_REQUIRE_SERVICES=1.
func Required() bool { return os.Getenv(RequireVar) == "1" }

// PostgresSchema creates a schema of its own for one test in the database
// KEFU_TEST_POSTGRES names (skipping or failing t as Postgres does when it is
// unset), drops it when the test ends, and returns a DSN whose search_path is
// that schema. Tests get synchronous_commit=off (they need no durability);
// benchmarks (a *testing.B) measure the real thing.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	base := Postgres(t)
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "kefu_test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", PostgresVar, err)
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
	dsn := WithParam(t, base, "search_path", schema)
	if _, bench := t.(*testing.B); !bench {
		dsn = WithParam(t, dsn, "synchronous_commit", "off")
	}
	return dsn
}

// WithParam sets a run-time parameter in a PostgreSQL DSN, a URL or
// key=value pairs.
func WithParam(t testing.TB, dsn, param, value string) string {
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

// Name returns a name no other test run uses: prefix, '_' and 12 random
// hex digits. With a prefix of letters, digits and '_' of up to 19
// characters it is a valid bus namespace (at most 32), Redis key prefix and
// NATS stream name.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// CleanRedis deletes, when t ends, every key starting with prefix on the
// Redis at url. Register it before the cleanups of what writes the keys
// (cleanups run last-registered first), so it runs after they stop.
func CleanRedis(t testing.TB, url, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		opts, err := goredis.ParseURL(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleanup: scan %s*: %v", prefix, err)
			return
		}
		if len(keys) > 0 {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("cleanup: del: %v", err)
			}
		}
	})
}

// CleanNATSStream deletes, when t ends, the JetStream stream called stream
// on the NATS server at url (a stream that does not exist is fine).
func CleanNATSStream(t testing.TB, url, stream string) {
	t.Helper()
	t.Cleanup(func() {
		nc, err := natsgo.Connect(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer nc.Close()
		js, err := nc.JetStream()
		if err == nil {
			err = js.DeleteStream(stream)
		}
		if err != nil && !errors.Is(err, natsgo.ErrStreamNotFound) {
			t.Errorf("cleanup: delete stream %s: %v", stream, err)
		}
	})
}
