package postgres

import (
	"testing"

	"github.com/kefuhq/kefu/internal/testenv"
)

// freshSchema is testenv.PostgresSchema.
func freshSchema(t testing.TB) string { t.Helper(); return testenv.PostgresSchema(t) }

// withParam is testenv.WithParam.
func withParam(t testing.TB, dsn, param, value string) string {
	t.Helper()
	return testenv.WithParam(t, dsn, param, value)
}
