// Package apns is kefu's push.Pusher for Apple Push Notification service,
// on github.com/sideshow/apns2 with token (.p8, ES256 JWT) authentication.
// It owns the push.apns section of kefu.yaml.
package apns

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/push"
)

// Type is the pusher type: the key under push: in kefu.yaml.
const Type = "apns"

func init() {
	config.RegisterPusher(Type, func() config.Section { return NewConfig() })
}

// Config is the push.apns section.
type Config struct {
	// KeyFile is the path of the APNs authentication key (AuthKey_KEYID.p8)
	// downloaded from the Apple developer console.
	KeyFile string `yaml:"key_file"`
	// KeyID is the key's 10-character Key ID.
	KeyID string `yaml:"key_id"`
	// TeamID is the 10-character Team ID of the Apple developer account.
	TeamID string `yaml:"team_id"`
	// Topic is the app's bundle id, used for devices registered without a
	// topic of their own.
	Topic string `yaml:"topic"`
	// Environment is production (App Store and TestFlight builds) or
	// sandbox (development builds): the APNs environment of devices
	// registered without one. A device registered with its own environment
	// is pushed to through that environment's host.
	Environment string `yaml:"environment"`
	// Host replaces the APNs host of both environments (a proxy, a test
	// server): an https:// URL. Empty: Apple's hosts.
	Host string `yaml:"host"`
	// FallbackAfter is how long a message sent over a live socket may stay
	// unacknowledged before it is pushed as well.
	FallbackAfter time.Duration `yaml:"fallback_after"`
}

// NewConfig returns the section's defaults.
func NewConfig() *Config {
	return &Config{Environment: string(core.PushProduction), FallbackAfter: push.DefaultFallbackAfter}
}

// appleID is what Key IDs and Team IDs look like.
var appleID = regexp.MustCompile(`^[A-Z0-9]{10}$`)

// PushTopic implements config.PushApp.
func (c *Config) PushTopic() string { return c.Topic }

// Validate reports every problem of an enabled section.
func (c *Config) Validate() error {
	var errs []error
	// The key file may not be in place while push is off: checked only
	// for an enabled pusher, like the settings left empty.
	if c.KeyFile == "" {
		errs = append(errs, config.MarkOnlyEnabled(config.Errorf("key_file", "required when push is enabled: the path of the AuthKey_….p8 file")))
	} else if _, err := loadKey(c.KeyFile); err != nil {
		errs = append(errs, config.MarkOnlyEnabled(config.Errorf("key_file", "%v", err)))
	}
	for _, f := range []struct {
		key, value, what string
		valid            func(string) bool
	}{
		{"key_id", c.KeyID, "the key's 10-character Key ID (A–Z, 0–9)", appleID.MatchString},
		{"team_id", c.TeamID, "the 10-character Team ID (A–Z, 0–9)", appleID.MatchString},
		{"topic", c.Topic, "the app's bundle id, like com.example.app", core.ValidTopic},
	} {
		switch {
		case f.value == "":
			errs = append(errs, config.MarkOnlyEnabled(config.Errorf(f.key, "required when push is enabled: %s", f.what)))
		case !f.valid(f.value):
			errs = append(errs, config.Errorf(f.key, "must be %s; got %q", f.what, f.value))
		}
	}
	errs = append(errs, config.OneOf("environment", c.Environment, string(core.PushProduction), string(core.PushSandbox)))
	if c.Host != "" {
		if err := config.URL("host", c.Host); err != nil {
			errs = append(errs, err)
		} else if !strings.HasPrefix(c.Host, "https://") {
			errs = append(errs, config.Errorf("host", "must be an https:// URL (APNs speaks HTTP/2 over TLS); got %q", c.Host))
		}
	}
	if c.FallbackAfter <= 0 {
		errs = append(errs, config.Errorf("fallback_after", "must be a positive duration such as 5s; got %s", c.FallbackAfter))
	}
	return errors.Join(errs...)
}

// loadKey reads and parses a .p8 key file.
func loadKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key: %v", err)
	}
	k, err := token.AuthKeyFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s is not an APNs .p8 key (a PEM \"PRIVATE KEY\" holding an EC P-256 key): %v", path, err)
	}
	return k, nil
}

// Options tune a Client beyond its config.
type Options struct {
	// HTTPClient replaces apns2's HTTP/2 client (tests pass the fake
	// server's, which trusts its certificate).
	HTTPClient *http.Client
}

// Client is a push.Pusher on APNs. It keeps one long-lived HTTP/2 client
// per environment, as Apple asks. Safe for concurrent use.
type Client struct {
	hosts map[core.PushEnvironment]*apns2.Client
	topic string
	env   core.PushEnvironment
}

// New builds a Client from a validated section.
func New(c *Config, opt Options) (*Client, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	key, err := loadKey(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	// One token for both environments: the JWT it signs is the same, and
	// APNs rejects tokens regenerated too often.
	tok := &token.Token{AuthKey: key, KeyID: c.KeyID, TeamID: c.TeamID}
	cl := &Client{hosts: map[core.PushEnvironment]*apns2.Client{}, topic: c.Topic, env: core.PushEnvironment(c.Environment)}
	for env, host := range map[core.PushEnvironment]string{core.PushProduction: apns2.HostProduction, core.PushSandbox: apns2.HostDevelopment} {
		ac := apns2.NewTokenClient(tok)
		ac.Host = host
		if c.Host != "" {
			ac.Host = strings.TrimRight(c.Host, "/")
		}
		if opt.HTTPClient != nil {
			ac.HTTPClient = opt.HTTPClient
		}
		cl.hosts[env] = ac
	}
	return cl, nil
}

// Push implements push.Pusher.
func (c *Client) Push(ctx context.Context, n push.Notification) error {
	env := n.Device.Environment
	if env == "" {
		env = c.env
	}
	ac, ok := c.hosts[env]
	if !ok {
		return fmt.Errorf("apns: device environment %q", env)
	}
	topic := n.Device.Topic
	if topic == "" {
		topic = c.topic
	}
	res, err := ac.PushWithContext(ctx, Notification(n, topic))
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &push.RetryError{Err: fmt.Errorf("apns: %w", err)}
	}
	return classify(res)
}

// Notification is the APNs request kefu sends for n: an alert with the
// sender as title, the text as body, the unread count as badge, the
// conversation as thread and collapse id, and the conversation id and
// sequence number as custom data for the app to resume from.
func Notification(n push.Notification, topic string) *apns2.Notification {
	p := payload.NewPayload().AlertBody(n.Body).Badge(n.Badge).Sound("default").
		ThreadID(n.CollapseID()).
		Custom("conversation_id", n.ConversationID).Custom("seq", n.Seq).Custom("message_id", n.MessageID)
	if n.Title != "" {
		p = p.AlertTitle(n.Title)
	}
	return &apns2.Notification{
		DeviceToken: n.Device.Token,
		Topic:       topic,
		Payload:     p,
		PushType:    apns2.PushTypeAlert,
		Priority:    apns2.PriorityHigh,
		CollapseID:  n.CollapseID(),
		Expiration:  n.Expiration,
	}
}

// classify maps an APNs answer to push's outcomes.
func classify(res *apns2.Response) error {
	if res.Sent() {
		return nil
	}
	err := fmt.Errorf("apns: %d %s", res.StatusCode, res.Reason)
	switch {
	case res.StatusCode == http.StatusGone && !res.Timestamp.IsZero():
		// The time APNs last confirmed the token invalid: a registration
		// made after it is kept (Apple: stop pushing "until the device
		// registers a token with a later timestamp").
		return &push.GoneError{Since: res.Timestamp.Time, Err: err}
	case res.StatusCode == http.StatusGone,
		res.Reason == apns2.ReasonUnregistered, res.Reason == apns2.ReasonExpiredToken,
		res.Reason == apns2.ReasonBadDeviceToken, res.Reason == apns2.ReasonDeviceTokenNotForTopic:
		return fmt.Errorf("%w: %w", push.ErrGone, err)
	case res.StatusCode == http.StatusForbidden:
		// ExpiredProviderToken, InvalidProviderToken, MissingProviderToken,
		// BadCertificate…, Forbidden: the key, its id or the team id is wrong.
		return fmt.Errorf("%w: %w", push.ErrProviderAuth, err)
	case res.StatusCode == http.StatusTooManyRequests, res.StatusCode >= 500,
		res.Reason == apns2.ReasonIdleTimeout: // the connection sat idle too long: a new one takes it
		return &push.RetryError{Err: err}
	}
	return err
}

var _ push.Pusher = (*Client)(nil)
