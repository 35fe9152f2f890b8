// Package web is kefu's web channel (type "web"): browser visitors (the
// embeddable widget) and agents (the console) talk to kefu over one
// protocol, on WebSocket and on HTTP long polling, plus a REST API under
// /api/v1. The wire protocol is documented in docs/protocol.md and the REST
// API in docs/api.md.
//
// The package has two halves that share the Channel:
//   - realtime: the hub that passes committed updates (from the bus's
//     fan-out topic) to the sockets and long polls this node holds, the
//     WebSocket and long-polling transports, and visitor sessions.
//   - api: agent login sessions and the REST API for conversations,
//     messages and agents.
package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
)

// Type is the channel type name.
const Type = "web"

// Config is the web channel's section of kefu.yaml.
type Config struct {
	// AllowedOrigins are the sites that may embed the widget: origins such
	// as "https://shop.example.com", or "*" for any. The console's own
	// origin is always allowed. Checked on WebSocket upgrade and for CORS.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// IdentitySecret is the key your site signs logged-in user ids with
	// (HMAC-SHA256), so a visitor keeps their history across devices.
	// Empty: only anonymous visitors.
	IdentitySecret string `yaml:"identity_secret"`
	// IdentityMaxAge is how old a signed identity may be.
	IdentityMaxAge time.Duration `yaml:"identity_max_age"`
	// VisitorTokenTTL is how long a visitor's session token is valid.
	VisitorTokenTTL time.Duration `yaml:"visitor_token_ttl"`
	// AgentTokenTTL is how long an agent's login lasts.
	AgentTokenTTL time.Duration `yaml:"agent_token_ttl"`
	// MaxFrameBytes is the largest frame (or long-poll body) accepted;
	// a larger WebSocket frame closes the connection with 1009.
	MaxFrameBytes int64 `yaml:"max_frame_bytes"`
	// PingInterval is how often the server pings each client; a client
	// silent for two intervals is dropped.
	PingInterval time.Duration `yaml:"ping_interval"`
	// SendQueue is how many frames may wait for one visitor connection; a
	// client that falls further behind is dropped and resumes when it
	// reconnects.
	SendQueue int `yaml:"send_queue"`
	// AgentSendQueue is the same for an agent's connection (WebSocket or
	// long poll). Agents receive every customer message of the node, not
	// one conversation's, so their queue absorbs the node's bursts: with
	// the visitors' 256 a busy console was dropped and replayed over and
	// over (BENCHMARKS.md). The queue holds pointers to frames shared by
	// every connection, and only while the client is behind.
	AgentSendQueue int `yaml:"agent_send_queue"`
	// LongPollTimeout is how long a long poll waits for something to say.
	LongPollTimeout time.Duration `yaml:"long_poll_timeout"`
	// Limits are the abuse controls of the public endpoints and of login.
	Limits Limits `yaml:"limits"`
}

// SingleInstance implements config.SingleInstance: every web channel would
// serve the same fixed paths (docs/protocol.md).
func (*Config) SingleInstance() {}

// Limits are the web channel's rate limits. Addresses are the client's, as
// server.trusted_proxies allows X-Forwarded-For to tell.
type Limits struct {
	// RequestsPerMinute per IP on the public (visitor) endpoints.
	RequestsPerMinute int `yaml:"requests_per_minute"`
	// MessagesPerMinute per visitor.
	MessagesPerMinute int `yaml:"messages_per_minute"`
	// ConversationsPerHour: new visitor sessions that may start a
	// conversation, per IP.
	ConversationsPerHour int `yaml:"conversations_per_hour"`
	// UploadMBPerHour: megabytes (MiB) visitors may upload per IP; a file
	// over what is left is refused (429) and not kept. Uploads that are
	// never sent are kept, so this bounds how fast an address can fill
	// the disk.
	UploadMBPerHour int `yaml:"upload_mb_per_hour"`
	// LoginFailuresPerAccount within LoginWindow before that account's
	// logins are refused until the window passes.
	LoginFailuresPerAccount int `yaml:"login_failures_per_account"`
	// LoginFailuresPerIP within LoginWindow before that address's logins
	// are refused.
	LoginFailuresPerIP int `yaml:"login_failures_per_ip"`
	// LoginWindow is the window of the two login limits.
	LoginWindow time.Duration `yaml:"login_window"`
}

// DefaultConfig is the web channel's config with every default.
func DefaultConfig() *Config {
	return &Config{
		IdentityMaxAge:  24 * time.Hour,
		VisitorTokenTTL: 30 * 24 * time.Hour,
		AgentTokenTTL:   7 * 24 * time.Hour,
		MaxFrameBytes:   64 << 10,
		PingInterval:    25 * time.Second,
		SendQueue:       256,
		AgentSendQueue:  8192,
		LongPollTimeout: 25 * time.Second,
		Limits: Limits{
			RequestsPerMinute:       300,
			MessagesPerMinute:       30,
			ConversationsPerHour:    20,
			UploadMBPerHour:         200,
			LoginFailuresPerAccount: 5,
			LoginFailuresPerIP:      20,
			LoginWindow:             15 * time.Minute,
		},
	}
}

// maxAgentSendQueue bounds agent_send_queue: a console that falls a
// million frames behind is better resumed from its cursor.
const maxAgentSendQueue = 1 << 20

// sendQueue is the send queue limit of a connection of audience aud.
func (c *Config) sendQueue(aud audience) int {
	if aud == audAgent {
		return c.AgentSendQueue
	}
	return c.SendQueue
}

// Validate implements config.Section.
func (c *Config) Validate() error {
	var errs []error
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			errs = append(errs, config.Errorf(fmt.Sprintf("allowed_origins[%d]", i), "must be an origin like https://shop.example.com or \"*\", got %q", o))
		}
	}
	positive := map[string]time.Duration{
		"identity_max_age": c.IdentityMaxAge, "visitor_token_ttl": c.VisitorTokenTTL, "agent_token_ttl": c.AgentTokenTTL,
		"ping_interval": c.PingInterval, "long_poll_timeout": c.LongPollTimeout, "limits.login_window": c.Limits.LoginWindow,
	}
	for _, k := range []string{"identity_max_age", "visitor_token_ttl", "agent_token_ttl", "ping_interval", "long_poll_timeout", "limits.login_window"} {
		if positive[k] <= 0 {
			errs = append(errs, config.Errorf(k, "must be positive"))
		}
	}
	if c.MaxFrameBytes < 1024 || c.MaxFrameBytes > 16<<20 {
		errs = append(errs, config.Errorf("max_frame_bytes", "must be between 1024 and 16777216"))
	}
	if c.SendQueue < 8 {
		errs = append(errs, config.Errorf("send_queue", "must be at least 8"))
	}
	if c.AgentSendQueue < 8 || c.AgentSendQueue > maxAgentSendQueue {
		errs = append(errs, config.Errorf("agent_send_queue", "must be between 8 and %d", maxAgentSendQueue))
	}
	for k, v := range map[string]int{
		"limits.requests_per_minute": c.Limits.RequestsPerMinute, "limits.messages_per_minute": c.Limits.MessagesPerMinute,
		"limits.conversations_per_hour": c.Limits.ConversationsPerHour, "limits.login_failures_per_account": c.Limits.LoginFailuresPerAccount,
		"limits.login_failures_per_ip": c.Limits.LoginFailuresPerIP, "limits.upload_mb_per_hour": c.Limits.UploadMBPerHour,
	} {
		if v < 1 {
			errs = append(errs, config.Errorf(k, "must be at least 1"))
		}
	}
	return errors.Join(errs...)
}

func init() {
	channels.Register(Type, func() config.Section { return DefaultConfig() },
		func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
			return New(name, *sec.(*Config), deps)
		})
}

// Channel is one web channel instance.
type Channel struct {
	name   string
	cfg    Config
	svc    *core.Service
	store  core.Store
	bus    bridge.Bus
	deps   channels.Deps
	log    *slog.Logger
	now    func() time.Time
	secret []byte // this deployment's signing key for visitor tokens, shared by all nodes

	rt  *realtime // realtime.go and the files it names
	api *api      // api.go and the files it names
}

// secretSetting is the store setting holding the web channel's signing key.
const secretSetting = "web.signing_key"

// New builds a web channel instance. It reads (or, on first start,
// creates) the deployment's signing key from the store.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Channel{
		name: name, cfg: cfg, svc: deps.Service, store: deps.Service.Store(), bus: deps.Bus,
		deps: deps, log: log.With("channel", name), now: time.Now,
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := c.store.EnsureSetting(ctx, secretSetting+"."+name, hex.EncodeToString(fresh))
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if c.secret, err = hex.DecodeString(key); err != nil || len(c.secret) < 32 {
		return nil, fmt.Errorf("signing key in the store is malformed")
	}
	if c.rt, err = newRealtime(c); err != nil {
		return nil, err
	}
	if c.api, err = newAPI(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// Mount implements channels.Mounter.
func (c *Channel) Mount(mux *http.ServeMux) {
	c.rt.mount(mux)
	c.rt.mountVisitorDevices(mux)
	c.api.mount(mux)
	c.mountConsole(mux)
	c.mountWidget(mux)
}

// Run implements channels.Runner: it feeds the hub from the bus and runs
// the channel's housekeeping until ctx is done.
func (c *Channel) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- c.rt.run(ctx) }()
	go func() { errc <- c.api.run(ctx) }()
	err := <-errc
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// originAllowed reports whether a browser page from origin may use the
// visitor endpoints. A request without Origin (not from a browser page)
// is allowed; so is the console's own origin.
func (c *Channel) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if ownOrigin(origin, r.Host, c.deps.PublicURL) {
		return true
	}
	for _, o := range c.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// ownOrigin reports whether origin is kefu's own page (the console, the
// demo): the host the request came to, or server.public_url's, since a
// reverse proxy may pass the request on with its own Host (nginx's
// proxy_pass does by default).
func ownOrigin(origin, host, publicURL string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	p, err := url.Parse(publicURL)
	return publicURL != "" && err == nil && strings.EqualFold(u.Scheme, p.Scheme) && strings.EqualFold(u.Host, p.Host)
}

var (
	_ channels.Channel = (*Channel)(nil)
	_ channels.Mounter = (*Channel)(nil)
	_ channels.Runner  = (*Channel)(nil)
)
