package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestConfigCheck runs `kefu config check` on each file in testdata: a
// good file prints ok and exits 0; a broken one prints its golden errors
// (every problem, with its line) and exits 1.
func TestConfigCheck(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"config", "check", "-c", file}, &stdout, &stderr)
			wantCode := 1
			if name == "good" {
				wantCode = 0
			}
			if code != wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, &stdout, &stderr)
			}
			got := stdout.String() + stderr.String()
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("output differs from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestServeRefusesBrokenConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"serve", "-c", "testdata/unknown_key.yaml"}, &stdout, &stderr); code != 1 {
		t.Fatalf("serve with a broken config: exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "server.adress") {
		t.Fatalf("serve did not name the bad key: %s", &stderr)
	}
}

// TestServeOnATakenPort: an address another process listens on is a clear
// error and exit 1, after the store was opened (a failure that late once
// crashed New's cleanup).
func TestServeOnATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kefu.yaml")
	yaml := fmt.Sprintf("server: {addr: %q}\nstore: {driver: sqlite, dsn: %q}\nmedia: {dir: %q}\n",
		ln.Addr().String(), filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"serve", "-c", cfg}, &stdout, &stderr); code != 1 {
		t.Fatalf("serve on a taken port: exit %d, want 1\nstderr: %s", code, &stderr)
	}
	if want := "listen on " + ln.Addr().String(); !strings.Contains(stderr.String(), want) {
		t.Fatalf("serve on a taken port did not say %q: %s", want, &stderr)
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "kefu ") {
		t.Fatalf("version: exit %d, %q", code, &stdout)
	}
	// Every way of asking lists the commands.
	for _, arg := range []string{"help", "-h", "-help", "--help"} {
		stdout.Reset()
		if code := run([]string{arg}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "migrate") {
			t.Errorf("kefu %s: exit %d, %q; want the commands", arg, code, &stdout)
		}
	}
}

// TestStrayArgumentIsExplained: "kefu serve kefu.yaml" (the -c left out)
// exits 2 saying why, not silently.
func TestStrayArgumentIsExplained(t *testing.T) {
	for _, args := range [][]string{{"serve", "kefu.yaml"}, {"config", "check", "-c", "a.yaml", "extra"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "unexpected argument") ||
			!strings.Contains(stderr.String(), "-c FILE") {
			t.Errorf("kefu %s: exit %d, stderr %q; want 2 and the reason", strings.Join(args, " "), code, &stderr)
		}
	}
}
