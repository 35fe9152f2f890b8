package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
	"github.com/kefuhq/kefu/internal/testenv"
)

var quiet = slog.New(slog.DiscardHandler)

// freshSchema: see FreshSchema in export_test.go.
var freshSchema = postgres.FreshSchema

func open(t testing.TB, dsn string, o postgres.Options) *postgres.Store {
	t.Helper()
	o.DSN = dsn
	if o.Logger == nil {
		o.Logger = quiet
	}
	s, err := postgres.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	testenv.Postgres(t)
	for _, tc := range []struct {
		name string
		o    postgres.Options
	}{
		{"group commit", postgres.Options{}},
		{"one write per transaction", postgres.Options{MaxBatch: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.o.MaxBatch == 1 && testing.Short() {
				t.Skip("-short: group commit only")
			}
			storetest.Run(t, func(t *testing.T) core.Store {
				return open(t, freshSchema(t), tc.o)
			})
		})
	}
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []postgres.Options{
		{},
		{DSN: "postgres://127.0.0.1:5432/x", MaxBatch: -1},
		{DSN: "postgres://%zz"},
	} {
		if s, err := postgres.Open(ctx, o); !errors.Is(err, core.ErrInvalid) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("Open(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
