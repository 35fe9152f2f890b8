//go:build unix

package sqlite_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
)

// One process per database (lock.go).

const lockHelperEnv = "KEFU_SQLITE_LOCK_HELPER"

// TestLockHelper is the other process of TestOneProcessPerDatabase: it
// opens the database named by lockHelperEnv, says so, and holds it until
// it is killed.
func TestLockHelper(t *testing.T) {
	path := os.Getenv(lockHelperEnv)
	if path == "" {
		t.Skip("run by TestOneProcessPerDatabase")
	}
	s, err := sqlite.Open(context.Background(), sqlite.Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os.Stdout.WriteString("ready\n")
	select {}
}

func TestOneProcessPerDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kefu.db")
	tryOpen := func() (*sqlite.Store, error) {
		return sqlite.Open(ctx, sqlite.Options{Path: path, Logger: quiet})
	}

	// Another process holds the database: refused, naming it.
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("the other process: %q, %v", line, err)
	}
	s, err := tryOpen()
	if err == nil {
		s.Close()
		t.Fatal("opened a database another process holds")
	}
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "process "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("second open: %v; want ErrConflict naming process %d", err, cmd.Process.Pid)
	}

	// It dies without closing anything: the database is free.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s, err = tryOpen()
	if err != nil {
		t.Fatalf("open after the holder died: %v", err)
	}

	// Within one process too, until Close.
	if s2, err := tryOpen(); !errors.Is(err, core.ErrConflict) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second open in one process: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = tryOpen()
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	s.Close()
}
