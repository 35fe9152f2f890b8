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
	"os"
	"testing"
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
