package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/node"
)

// A store that cannot be opened is an error from New that names it, not a
// panic in New's cleanup (a nil *sqlite.Store in the core.Store interface
// was closed).
func TestNewStoreFails(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("store: {driver: sqlite, dsn: %q}\nmedia: {dir: %q}\nlog: {level: error}\n",
		filepath.Join(file, "kefu.db"), filepath.Join(dir, "media"))
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n, err := node.New(context.Background(), cfg, node.Options{Listener: ln,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		n.Close()
		t.Fatal("New with a store path under a file succeeded")
	}
	if !strings.Contains(err.Error(), "not-a-dir") {
		t.Errorf("error %q does not name the store's path", err)
	}
}
