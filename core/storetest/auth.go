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

func testMediaUsed(t *testing.T, s core.Store) {
	const key = "0123456789abcdef0123456789abcdef.png"
	if used, err := s.MediaUsed(ctx, key); err != nil || used {
		t.Fatalf("MediaUsed before any message = %v, %v", used, err)
	}
	_, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "a:1", Message: core.Message{Kind: core.KindImage,
		Media: &core.Media{Key: key, Type: "image/png", Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if used, err := s.MediaUsed(ctx, key); err != nil || !used {
		t.Fatalf("MediaUsed of a message's file = %v, %v", used, err)
	}
	if used, err := s.MediaUsed(ctx, "fedcba9876543210fedcba9876543210.png"); err != nil || used {
		t.Fatalf("MediaUsed of another file = %v, %v", used, err)
	}
}

func testSettingsList(t *testing.T, s core.Store) {
	for _, k := range []string{"media.upload.c", "media.upload.a", "media.uploads", "media.upload.b", "media.upload", "media.uploaa.z", "agent.1.away"} {
		if err := s.PutSetting(ctx, k, "v-"+k); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(kvs []core.Setting) []string {
		var out []string
		for _, kv := range kvs {
			if kv.Value != "v-"+kv.Key {
				t.Errorf("%s holds %q", kv.Key, kv.Value)
			}
			out = append(out, kv.Key)
		}
		return out
	}
	got, err := s.Settings(ctx, "media.upload.", "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); fmt.Sprint(k) != "[media.upload.a media.upload.b]" {
		t.Fatalf("first page = %v", k)
	}
	got, err = s.Settings(ctx, "media.upload.", got[1].Key, 2)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); fmt.Sprint(k) != "[media.upload.c]" {
		t.Fatalf("second page = %v", k)
	}
	if got, err = s.Settings(ctx, "media.upload.", "media.upload.c", 2); err != nil || len(got) != 0 {
		t.Fatalf("past the last = %v, %v", got, err)
	}
	if got, err = s.Settings(ctx, "nothing.", "", 10); err != nil || len(got) != 0 {
		t.Fatalf("no such prefix = %v, %v", got, err)
	}
	for _, n := range []int{0, core.MaxBatchRead + 1} {
		if _, err := s.Settings(ctx, "media.", "", n); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("limit %d: %v, want ErrInvalid", n, err)
		}
	}
}

func testSwapSetting(t *testing.T, s core.Store) {
	if err := s.PutSetting(ctx, "rec", "v1"); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		got, err := s.Setting(ctx, "rec")
		if want == "" {
			if !errors.Is(err, core.ErrNotFound) {
				t.Fatalf("Setting = %q, %v; want ErrNotFound", got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("Setting = %q, %v; want %q", got, err, want)
		}
	}
	if ok, err := s.ReplaceSetting(ctx, "rec", "v0", "v2"); ok || err != nil {
		t.Fatalf("replace from a stale value = %v, %v", ok, err)
	}
	check("v1")
	if ok, err := s.DeleteSetting(ctx, "rec", "v0"); ok || err != nil {
		t.Fatalf("delete of a stale value = %v, %v", ok, err)
	}
	check("v1")
	// Racing replacements from one value: exactly one wins.
	const n = 8
	won := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ok, err := s.ReplaceSetting(ctx, "rec", "v1", fmt.Sprintf("w%d", i))
			if err != nil {
				t.Error(err)
			}
			won[i] = ok
		})
	}
	wg.Wait()
	winner := -1
	for i, ok := range won {
		if ok && winner >= 0 {
			t.Fatalf("replacements %d and %d both won", winner, i)
		}
		if ok {
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no replacement won")
	}
	check(fmt.Sprintf("w%d", winner))
	if ok, err := s.DeleteSetting(ctx, "rec", fmt.Sprintf("w%d", winner)); !ok || err != nil {
		t.Fatalf("delete = %v, %v", ok, err)
	}
	check("")
	if ok, err := s.ReplaceSetting(ctx, "rec", "v1", "v3"); ok || err != nil {
		t.Fatalf("replace of a missing key = %v, %v", ok, err)
	}
	check("")
	if ok, err := s.DeleteSetting(ctx, "rec", "v1"); ok || err != nil {
		t.Fatalf("delete of a missing key = %v, %v", ok, err)
	}
	if _, err := s.ReplaceSetting(ctx, "", "a", "b"); !errors.Is(err, core.ErrInvalid) {
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
