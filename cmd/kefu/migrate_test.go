package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/adapters/media/local"
	mediapg "github.com/kefuhq/kefu/adapters/media/postgres"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/internal/testenv"
)

// kefu migrate sqlite-to-postgres -media DIR copies the media folder into
// the database, where media.driver postgres reads it.
func TestMigrateMedia(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresSchema(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "kefu.db")
	s, err := sqlite.Open(ctx, sqlite.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(dir, "media")
	lb, err := local.New(mdir)
	if err != nil {
		t.Fatal(err)
	}
	const key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.png"
	if err := lb.Put(ctx, key, strings.NewReader("not really a png")); err != nil {
		t.Fatal(err)
	}
	_ = lb.Close()

	t.Run("missing folder changes nothing", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := run([]string{"migrate", "sqlite-to-postgres", "-from", db, "-to", dsn, "-media", filepath.Join(dir, "nope")}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "not a folder") {
			t.Fatalf("exit %d, stderr %q", code, errOut.String())
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		var untouched bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('contacts') IS NULL`).Scan(&untouched); err != nil || !untouched {
			t.Fatalf("the target was changed: %v", err)
		}
	})

	var out, errOut bytes.Buffer
	if code := run([]string{"migrate", "sqlite-to-postgres", "-from", db, "-to", dsn, "-media", mdir}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "media files    1 (16 bytes; 0 there already)") {
		t.Errorf("output does not count the file:\n%s", out.String())
	}
	b, err := mediapg.Open(ctx, mediapg.Options{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, _, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); string(got) != "not really a png" {
		t.Fatalf("copied file = %q", got)
	}

	// Again, with -force: the rows are replaced, the file is there already.
	out.Reset()
	if code := run([]string{"migrate", "sqlite-to-postgres", "-from", db, "-to", dsn, "-media", mdir, "-force"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "media files    0 (0 bytes; 1 there already)") {
		t.Errorf("second run:\n%s", out.String())
	}
}

// TestMigrateLeavesOtherFilesAlone: -from naming a SQLite file kefu did not
// make (or no file) fails without writing kefu's schema into it.
func TestMigrateLeavesOtherFilesAlone(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE notes (x TEXT)`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	for _, from := range []string{other, filepath.Join(dir, "missing.db")} {
		var out, errOut bytes.Buffer
		code := run([]string{"migrate", "sqlite-to-postgres", "-from", from, "-to", "postgres://kefu:S3cret@127.0.0.1:1/x"}, &out, &errOut)
		if code != 1 || strings.Contains(errOut.String(), "S3cret") {
			t.Errorf("-from %s: exit %d, stderr %q; want 1, without the password", from, code, &errOut)
		}
	}
	db, err = sql.Open("sqlite", other+"?_query_only=on")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table'`).Scan(&tables); err != nil || tables != 1 {
		t.Errorf("other.db has %d tables (%v), want only its own", tables, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !os.IsNotExist(err) {
		t.Errorf("a missing -from was created: %v", err)
	}
}
