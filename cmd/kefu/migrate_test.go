package main

import (
	"bytes"
	"context"
	"io"
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
