package postgres_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/testenv"
)

// On a database whose LC_CTYPE is C (initdb --no-locale, many managed
// services) PostgreSQL's lower() folds ASCII only: an agent whose email
// core stored folded ("élodie@…") still logs in typing it in another case.
func TestAgentByEmailOnACLocale(t *testing.T) {
	base := testenv.Postgres(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	db := testenv.Name("kefu_c")
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+db+` TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the store's own cleanup closes it
		c, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP DATABASE IF EXISTS `+db+` WITH (FORCE)`)
			_ = c.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	s := open(t, u.String(), postgres.Options{})
	a, err := s.CreateAgent(ctx, core.Agent{Email: "élodie@example.com", Name: "Élodie", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, typed := range []string{"Élodie@Example.com", "ÉLODIE@EXAMPLE.COM", "élodie@example.com"} {
		if got, err := s.AgentByEmail(ctx, typed); err != nil || got.ID != a.ID {
			t.Errorf("AgentByEmail(%q) = %+v, %v", typed, got, err)
		}
	}
}
