package apns_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/push"
	"github.com/kefuhq/kefu/push/apns"
	"github.com/kefuhq/kefu/push/apns/apnstest"
)

const (
	keyID  = "ABC123DEFG"
	teamID = "TEAM123456"
	topic  = "com.example.app"
)

var token = strings.Repeat("ab", 32)

// setup writes a fresh .p8 key and starts a fake APNs that trusts it.
func setup(t *testing.T) (*apns.Config, *apnstest.Server) {
	t.Helper()
	pemBytes, key, err := apnstest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "AuthKey_"+keyID+".p8")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := apnstest.New(apnstest.Config{Key: &key.PublicKey, KeyID: keyID, TeamID: teamID, Topics: []string{topic, "com.example.other"}})
	t.Cleanup(srv.Close)
	cfg := apns.NewConfig()
	cfg.KeyFile, cfg.KeyID, cfg.TeamID, cfg.Topic, cfg.Host = path, keyID, teamID, topic, srv.URL
	return cfg, srv
}

func client(t *testing.T, cfg *apns.Config, srv *apnstest.Server) *apns.Client {
	t.Helper()
	c, err := apns.New(cfg, apns.Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func note() push.Notification {
	return push.Notification{
		Device: core.Device{Token: token, Environment: core.PushSandbox},
		Title:  "Alice", Body: "Found it!", Badge: 3, ConversationID: 12, Seq: 9, MessageID: 310,
	}
}

func TestPushReachesAPNs(t *testing.T) {
	cfg, srv := setup(t)
	c := client(t, cfg, srv)
	if err := c.Push(context.Background(), note()); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Problem != "" {
		t.Fatalf("the fake APNs refused the request: %s", r.Problem)
	}
	p := r.Payload
	switch {
	case r.Token != token, r.Topic != topic, r.PushType != "alert", r.Priority != "10", r.CollapseID != "12":
		t.Errorf("headers: %+v", r)
	case p.APS.Alert.Title != "Alice", p.APS.Alert.Body != "Found it!", p.APS.Badge == nil, *p.APS.Badge != 3,
		p.APS.ThreadID != "12", p.ConversationID != 12, p.Seq != 9, p.MessageID != 310:
		t.Errorf("payload: %+v", p)
	}

	// The device's own topic wins over the configured one.
	n := note()
	n.Device.Topic = "com.example.other"
	if err := c.Push(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if r := srv.Requests()[1]; r.Topic != "com.example.other" {
		t.Errorf("topic %q, want the device's", r.Topic)
	}
}

func TestWrongKeyIsProviderAuthFailure(t *testing.T) {
	cfg, srv := setup(t)
	other, _ := setup(t) // a key the server does not know
	cfg.KeyFile = other.KeyFile
	err := client(t, cfg, srv).Push(context.Background(), note())
	if !errors.Is(err, push.ErrProviderAuth) {
		t.Fatalf("err = %v, want ErrProviderAuth", err)
	}
	if r := srv.Requests()[0]; !strings.Contains(r.Problem, "signature") {
		t.Errorf("the fake refused for %q, want the signature", r.Problem)
	}

	cfg, srv = setup(t)
	cfg.TeamID = "OTHERTEAM1"
	if err := client(t, cfg, srv).Push(context.Background(), note()); !errors.Is(err, push.ErrProviderAuth) {
		t.Fatalf("wrong team: err = %v, want ErrProviderAuth", err)
	}
}

func TestOutcomes(t *testing.T) {
	cfg, srv := setup(t)
	c := client(t, cfg, srv)
	for _, tc := range []struct {
		name   string
		answer apnstest.Answer
		gone   bool
		retry  bool
		auth   bool
	}{
		{"410 Unregistered", apnstest.Unregistered, true, false, false},
		{"410 ExpiredToken", apnstest.Answer{Status: 410, Reason: "ExpiredToken"}, true, false, false},
		{"400 BadDeviceToken", apnstest.BadDeviceToken, true, false, false},
		{"400 DeviceTokenNotForTopic", apnstest.Answer{Status: 400, Reason: "DeviceTokenNotForTopic"}, true, false, false},
		{"429", apnstest.TooMany, false, true, false},
		{"500", apnstest.InternalError, false, true, false},
		{"503", apnstest.Answer{Status: 503, Reason: "ServiceUnavailable"}, false, true, false},
		{"400 IdleTimeout", apnstest.Answer{Status: 400, Reason: "IdleTimeout"}, false, true, false},
		{"403 ExpiredProviderToken", apnstest.ExpiredKey, false, false, true},
		{"413 PayloadTooLarge", apnstest.Answer{Status: 413, Reason: "PayloadTooLarge"}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.Script(token, tc.answer)
			err := c.Push(context.Background(), note())
			var re *push.RetryError
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, push.ErrGone) != tc.gone || errors.As(err, &re) != tc.retry || errors.Is(err, push.ErrProviderAuth) != tc.auth {
				t.Errorf("err = %v: gone %v retry %v auth %v, want %v %v %v", err,
					errors.Is(err, push.ErrGone), errors.As(err, &re), errors.Is(err, push.ErrProviderAuth), tc.gone, tc.retry, tc.auth)
			}
		})
	}
}

func TestNetworkFailureIsRetryable(t *testing.T) {
	cfg, srv := setup(t)
	c := client(t, cfg, srv)
	srv.Close()
	var re *push.RetryError
	if err := c.Push(context.Background(), note()); !errors.As(err, &re) {
		t.Fatalf("err = %v, want a RetryError", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good, _ := setup(t)
	dir := t.TempDir()
	notKey := filepath.Join(dir, "notkey.p8")
	if err := os.WriteFile(notKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(c *apns.Config)
		want string // "" = valid
	}{
		{"valid", func(*apns.Config) {}, ""},
		{"sandbox without host", func(c *apns.Config) { c.Environment, c.Host = "sandbox", "" }, ""},
		{"no key file", func(c *apns.Config) { c.KeyFile = "" }, "key_file: required"},
		{"missing key file", func(c *apns.Config) { c.KeyFile = filepath.Join(dir, "none.p8") }, "key_file: cannot read the key"},
		{"not a key", func(c *apns.Config) { c.KeyFile = notKey }, "is not an APNs .p8 key"},
		{"no key id", func(c *apns.Config) { c.KeyID = "" }, "key_id: required"},
		{"short team id", func(c *apns.Config) { c.TeamID = "ABC" }, "team_id: must be the 10-character Team ID"},
		{"no topic", func(c *apns.Config) { c.Topic = "" }, "topic: required"},
		{"bad environment", func(c *apns.Config) { c.Environment = "staging" }, "environment: must be one of production, sandbox"},
		{"plain http host", func(c *apns.Config) { c.Host = "http://apns.local" }, "host: must be an https:// URL"},
		{"bad host", func(c *apns.Config) { c.Host = "apns.local" }, "host: must be an absolute"},
		{"zero fallback", func(c *apns.Config) { c.FallbackAfter = 0 }, "fallback_after: must be a positive duration"},
		{"negative fallback", func(c *apns.Config) { c.FallbackAfter = -time.Second }, "fallback_after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *good
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if tc.want != "" {
				if _, err := apns.New(&c, apns.Options{}); err == nil {
					t.Error("New accepted an invalid config")
				}
			}
		})
	}
	// Every problem is reported at once.
	all := apns.NewConfig()
	err := all.Validate()
	for _, k := range []string{"key_file", "key_id", "team_id", "topic"} {
		if err == nil || !strings.Contains(err.Error(), k+":") {
			t.Errorf("empty config: %v does not name %s", err, k)
		}
	}
}

// TestConfigThroughLoader checks the section as kefu.yaml spells it: an
// enabled push.apns with problems is refused by the loader with the keys'
// paths and lines; a disabled one may leave its settings empty and its key
// file out of place, but its bad values are refused too.
func TestConfigThroughLoader(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	_, err := config.Parse("kefu.yaml", []byte("push:\n  apns:\n    enabled: true\n    environment: staging\n    fallback_after: 0s\n"), noEnv)
	if err == nil {
		t.Fatal("an enabled, empty push.apns was accepted")
	}
	for _, want := range []string{"push.apns.key_file", "push.apns.key_id", "push.apns.team_id", "push.apns.topic",
		"kefu.yaml:4: push.apns.environment", "kefu.yaml:5: push.apns.fallback_after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors do not name %s:\n%v", want, err)
		}
	}
	if _, err := config.Parse("kefu.yaml", []byte("push:\n  apns: {enabled: false, key_file: /nowhere/AuthKey.p8}\n"), noEnv); err != nil {
		t.Errorf("a disabled section without its settings and key: %v", err)
	}
	_, err = config.Parse("kefu.yaml", []byte("push:\n  apns: {enabled: false, environment: staging, team_id: ABC}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "push.apns.environment") || !strings.Contains(err.Error(), "push.apns.team_id") ||
		strings.Contains(err.Error(), "key_file") {
		t.Errorf("a disabled section with bad values: %v, want its environment and team_id named, nothing required", err)
	}
	if _, err := config.Parse("kefu.yaml", []byte("push:\n  apns: {enabled: false, colour: blue}\n"), noEnv); err == nil {
		t.Error("an unknown key was accepted")
	}
}

// TestGoneSince: a 410's timestamp (milliseconds since the epoch) comes
// back as the GoneError's Since, to the second, and is still an ErrGone.
func TestGoneSince(t *testing.T) {
	cfg, srv := setup(t)
	c := client(t, cfg, srv)
	at := time.Date(2026, 11, 20, 8, 30, 15, 250e6, time.UTC)
	srv.Script(token, apnstest.Answer{Status: 410, Reason: "Unregistered", Timestamp: at})
	err := c.Push(context.Background(), note())
	var g *push.GoneError
	if !errors.As(err, &g) || !errors.Is(err, push.ErrGone) {
		t.Fatalf("err = %v, want a GoneError that is ErrGone", err)
	}
	if want := at.Truncate(time.Second); !g.Since.Equal(want) {
		t.Errorf("Since = %v, want %v", g.Since, want)
	}
}
