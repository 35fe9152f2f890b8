package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/node"
)

// The first start prints where the console and the demo are, and the
// password of the admin account it created, once, to stderr; the log never
// holds the password. Later starts print the addresses only.
func TestFirstRunAnnouncesAdminOnce(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse("kefu.yaml", []byte(`
store: {dsn: `+filepath.Join(dir, "kefu.db")+`}
media: {dir: `+filepath.Join(dir, "media")+`}
channels:
  web: {enabled: true}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	start := func() (*node.Node, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		n, err := node.New(ctx, cfg, node.Options{Listener: ln, Logger: node.NewLogger(config.Log{Level: "debug"}, &logs)})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := announce(ctx, n, cfg, &out); err != nil {
			t.Fatal(err)
		}
		return n, out.String()
	}

	n, first := start()
	base := n.BaseURL()
	for _, want := range []string{base + "/console/", base + "/demo", "email:    " + node.FirstAdminEmail} {
		if !strings.Contains(first, want) {
			t.Errorf("first start says\n%s\nwithout %q", first, want)
		}
	}
	m := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("no password in\n%s", first)
	}
	password := m[1]
	if strings.Contains(logs.String(), password) {
		t.Fatal("the password is in the log")
	}
	// It logs in.
	srv := &http.Server{Handler: n.Handler()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	body, _ := json.Marshal(map[string]string{"email": node.FirstAdminEmail, "password": password})
	resp, err := http.Post("http://"+ln.Addr().String()+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_ = srv.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logging in with the printed password: HTTP %d", resp.StatusCode)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2, second := start()
	defer n2.Close()
	if strings.Contains(second, "password") || !strings.Contains(second, n2.BaseURL()+"/console/") {
		t.Fatalf("second start says\n%s", second)
	}
}

// A configuration without any channel (a trimmed file) starts, but the
// first start says that nobody can reach it, and does not send the admin
// to a console that is not there.
func TestAnnounceWithoutChannels(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse("kefu.yaml", []byte(`
store: {dsn: `+filepath.Join(dir, "kefu.db")+`}
media: {dir: `+filepath.Join(dir, "media")+`}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := node.New(ctx, cfg, node.Options{Listener: ln, Logger: node.NewLogger(config.Log{Level: "error"}, &bytes.Buffer{})})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var out bytes.Buffer
	if err := announce(ctx, n, cfg, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "No channel is enabled") || strings.Contains(got, "Log in to the console") || !strings.Contains(got, "enable channels.web") {
		t.Errorf("announce without channels says\n%s", got)
	}
}

// config check passes a file without channels, with a note that nobody
// could reach kefu.
func TestConfigCheckNotesNoChannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kefu.yaml")
	if err := os.WriteFile(path, []byte("log: {format: json}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := configCheck([]string{"-c", path}, &out, &errOut); code != 0 || !strings.Contains(out.String(), ": ok") ||
		!strings.Contains(errOut.String(), "no channel is enabled") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}
