package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Settings and agents' sessions.

func testEnsureSetting(t *testing.T, s core.Store) {
	// Concurrent first starts: one value wins and everyone gets it.
	const n = 10
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = s.EnsureSetting(ctx, "web.secret", fmt.Sprintf("secret-%d", i)) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("callers got %q and %q", got[0], got[i])
		}
	}
	if v, err := s.EnsureSetting(ctx, "web.secret", "later"); err != nil || v != got[0] {
		t.Errorf("later EnsureSetting = %q, %v; want %q", v, err, got[0])
	}
	if v, err := s.EnsureSetting(ctx, "other", "x"); err != nil || v != "x" {
		t.Errorf("another key = %q, %v", v, err)
	}
}

func testPutSetting(t *testing.T, s core.Store) {
	if _, err := s.Setting(ctx, "cursor"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Setting of a missing key: %v, want ErrNotFound", err)
	}
	for _, v := range []string{"41", "42"} {
		if err := s.PutSetting(ctx, "cursor", v); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Setting(ctx, "cursor"); err != nil || got != v {
			t.Fatalf("Setting = %q, %v; want %q", got, err, v)
		}
	}
	// EnsureSetting does not replace a value PutSetting stored.
	if got, err := s.EnsureSetting(ctx, "cursor", "0"); err != nil || got != "42" {
		t.Fatalf("EnsureSetting over a put value = %q, %v", got, err)
	}
	if err := s.PutSetting(ctx, "", "x"); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("empty key: %v, want ErrInvalid", err)
	}
}

func testSessions(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	bob := newAgent(t, s, "bob@example.com")
	a1 := core.Session{TokenHash: "hash-a1", AgentID: alice.ID, CreatedAt: t0, ExpiresAt: at(time.Hour),
		IP: "203.0.113.7", UserAgent: "Mozilla/5.0"}
	for _, ss := range []core.Session{
		a1,
		{TokenHash: "hash-a2", AgentID: alice.ID, CreatedAt: t0, ExpiresAt: at(2 * time.Hour)},
		{TokenHash: "hash-b1", AgentID: bob.ID, CreatedAt: t0, ExpiresAt: at(time.Minute)},
	} {
		if err := s.CreateSession(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Session(ctx, "hash-a1")
	if err != nil {
		t.Fatal(err)
	}
	if got.TokenHash != a1.TokenHash || got.AgentID != alice.ID || got.IP != a1.IP || got.UserAgent != a1.UserAgent {
		t.Errorf("Session = %+v, want %+v", got, a1)
	}
	equalTime(t, "CreatedAt", got.CreatedAt, t0)
	equalTime(t, "ExpiresAt", got.ExpiresAt, at(time.Hour))

	wantErr(t, "same token hash", s.CreateSession(ctx, a1), core.ErrConflict)
	wantErr(t, "unknown agent", s.CreateSession(ctx, core.Session{TokenHash: "hash-x", AgentID: 424242,
		ExpiresAt: at(time.Hour)}), core.ErrNotFound)
	_, err = s.Session(ctx, "nope")
	wantErr(t, "unknown token", err, core.ErrNotFound)

	// Expired sessions are still read (the caller decides), until deleted.
	if _, err := s.Session(ctx, "hash-b1"); err != nil {
		t.Errorf("expired session before cleanup: %v", err)
	}
	n, err := s.DeleteExpiredSessions(ctx, at(30*time.Minute))
	if err != nil || n != 1 {
		t.Errorf("DeleteExpiredSessions = %d, %v; want 1", n, err)
	}
	_, err = s.Session(ctx, "hash-b1")
	wantErr(t, "deleted expired session", err, core.ErrNotFound)

	if err := s.RevokeSession(ctx, "hash-a1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, "hash-a1"); err != nil {
		t.Errorf("revoking a missing session: %v", err)
	}
	_, err = s.Session(ctx, "hash-a1")
	wantErr(t, "revoked session", err, core.ErrNotFound)

	if err := s.CreateSession(ctx, core.Session{TokenHash: "hash-a3", AgentID: alice.ID, ExpiresAt: at(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n, err = s.RevokeSessions(ctx, alice.ID)
	if err != nil || n != 2 {
		t.Errorf("RevokeSessions = %d, %v; want 2", n, err)
	}
	for _, h := range []string{"hash-a2", "hash-a3"} {
		_, err := s.Session(ctx, h)
		wantErr(t, "session after RevokeSessions", err, core.ErrNotFound)
	}
	if n, err := s.RevokeSessions(ctx, alice.ID); err != nil || n != 0 {
		t.Errorf("RevokeSessions again = %d, %v", n, err)
	}
}
