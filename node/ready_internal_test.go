package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/core"
)

// pingStore is a store whose Ping answers err.
type pingStore struct {
	core.Store
	err error
}

func (s *pingStore) Ping(context.Context) error { return s.err }

// /readyz is public: a store error, which names the database's host and
// user, is logged, once while it lasts, and the answer says only what is
// not ready.
func TestReadyzKeepsErrorsInTheLog(t *testing.T) {
	var logged bytes.Buffer
	st := &pingStore{err: errors.New(`failed to connect to host=db.internal user=kefu_prod database=kefu`)}
	n := &Node{store: st, bus: memory.New(nil), log: slog.New(slog.NewTextHandler(&logged, nil))}
	ready := func() (int, string) {
		rec := httptest.NewRecorder()
		n.serveReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	for range 3 {
		code, body := ready()
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "store: unavailable") || strings.Contains(body, "db.internal") {
			t.Fatalf("/readyz: HTTP %d %q; want 503 naming the store and not its error", code, body)
		}
	}
	if got := strings.Count(logged.String(), "db.internal"); got != 1 {
		t.Errorf("the store's error logged %d times over 3 probes, want once:\n%s", got, &logged)
	}
	st.err = nil
	if code, body := ready(); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz when well: HTTP %d %q", code, body)
	}
	if !strings.Contains(logged.String(), "ready again") {
		t.Errorf("the recovery was not logged:\n%s", &logged)
	}
}
