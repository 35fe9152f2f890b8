// Package config loads kefu's YAML configuration (kefu.yaml).
//
// Load and Parse expand ${NAME} and ${NAME:-default} in every value, decode
// strictly (unknown keys, wrong types and duplicate keys are errors), apply
// defaults and validate, and report every problem at once as *Errors, each
// naming the file, line and key. The fixed sections (server, store, media,
// bus, routing, log, agents) are defined here; channel and pusher sections
// are defined by their own packages and registered with RegisterChannel and
// RegisterPusher, so this package never changes when one gains a key.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Values of the enumerated keys.
const (
	StoreSQLite   = "sqlite"   // store.driver: embedded SQLite (default)
	StorePostgres = "postgres" // store.driver: PostgreSQL, for clusters

	SyncNormal = "normal" // store.sync: safe against kill -9 (default)
	SyncFull   = "full"   // store.sync: also safe against power loss

	MediaLocal    = "local"    // media.driver: a local folder, media.dir (default)
	MediaPostgres = "postgres" // media.driver: the PostgreSQL store's database, for clusters

	BusMemory = "memory" // bus.driver: in-process (default)
	BusRedis  = "redis"  // bus.driver: Redis Streams
	BusNATS   = "nats"   // bus.driver: NATS JetStream

	StrategyRoundRobin = "round_robin" // routing.strategy
	StrategyLeastBusy  = "least_busy"  // routing.strategy (default)

	RoleAgent = "agent" // agents[].role (default)
	RoleAdmin = "admin" // agents[].role: may also manage agents

	LogText = "text" // log.format (default)
	LogJSON = "json" // log.format
)

// DefaultOfflineReply is routing.offline_reply when the file does not set it.
const DefaultOfflineReply = "We are away; we will answer as soon as we are back."

// DefaultBusyReply is routing.busy_reply when the file does not set it.
const DefaultBusyReply = "All our agents are busy right now. You are number {position} in line; we will be with you shortly."

// Config is a whole kefu.yaml.
type Config struct {
	Server   Server                      `yaml:"server"`   // HTTP listener and how kefu is reached
	NodeID   string                      `yaml:"node_id"`  // unique per node when clustered; default $HOSTNAME or "kefu-1"
	Store    Store                       `yaml:"store"`    // where conversations are stored
	Media    Media                       `yaml:"media"`    // where images and files are kept
	Bus      Bus                         `yaml:"bus"`      // the message bus between nodes and workers
	Routing  Routing                     `yaml:"routing"`  // how conversations reach agents
	Log      Log                         `yaml:"log"`      // process logging
	Agents   []Agent                     `yaml:"agents"`   // agents created on first start if absent; the API owns them after
	Channels map[string]*ChannelInstance `yaml:"channels"` // channel instances by name; never nil after Parse or Default
	Push     map[string]*PusherInstance  `yaml:"push"`     // push fallbacks by name (normally the pusher type); never nil after Parse or Default
}

// Server is the server: section.
type Server struct {
	Addr           string   `yaml:"addr"`            // listen address, host:port; default ":8080"
	PublicURL      string   `yaml:"public_url"`      // absolute http(s) URL users reach kefu at, for links and webhook URLs; optional
	TrustedProxies []string `yaml:"trusted_proxies"` // CIDRs (or bare IPs) whose X-Forwarded-For is believed; default none
	// IdleTimeout is how long an HTTP keep-alive connection may wait for
	// its next request before kefu closes it (each holds an open file);
	// default DefaultIdleTimeout. WebSockets and long polls in progress
	// are not idle.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultIdleTimeout is server.idle_timeout's default.
const DefaultIdleTimeout = 2 * time.Minute

// Store is the store: section.
type Store struct {
	Driver string `yaml:"driver"` // sqlite | postgres; default sqlite
	DSN    string `yaml:"dsn"`    // SQLite file path, or a postgres:// URL; default "data/kefu.db"
	Sync   string `yaml:"sync"`   // normal: safe against kill -9; full: also against power loss; default normal
}

// Media is the media: section.
type Media struct {
	// Driver is where files are kept: local (the folder dir, one node) or
	// postgres (tables in the database of store.dsn, which every node of a
	// cluster shares; needs store.driver postgres). Default local.
	Driver   string `yaml:"driver"`
	Dir      string `yaml:"dir"`       // local folder for media (driver local); default "data/media"
	MaxBytes int64  `yaml:"max_bytes"` // largest accepted file; default 20971520 (20 MiB)
}

// Bus is the bus: section.
type Bus struct {
	Driver string `yaml:"driver"` // memory | redis | nats; default memory
	URL    string `yaml:"url"`    // redis:// or rediss:// URL for redis, nats:// URL for nats; unused for memory
	// Namespace keeps this deployment's topics apart from another's on a
	// shared server: the Redis stream keys get the prefix "NAMESPACE:", and
	// the NATS JetStream stream is named NAMESPACE instead of KEFU. Every
	// node of one deployment must use the same value. Default: none.
	Namespace string `yaml:"namespace"`
}

// Routing is the routing: section.
type Routing struct {
	Strategy        string        `yaml:"strategy"`           // round_robin | least_busy; default least_busy
	MaxOpenPerAgent int           `yaml:"max_open_per_agent"` // open conversations one agent is given at most; default 8
	ReopenWithin    time.Duration `yaml:"reopen_within"`      // a message after a conversation is resolved reopens it within this, starts a new one after; default 168h
	OfflineReply    string        `yaml:"offline_reply"`      // sent once per conversation when no agent is available; {number} is its number; empty sends nothing
	BusyReply       string        `yaml:"busy_reply"`         // sent once per conversation that waits while agents are available but all at max_open_per_agent; {position} is its place in the queue, {number} its number; empty sends nothing
}

// Log is the log: section.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error; default info
	Format string `yaml:"format"` // text | json; default text
}

// Agent is one entry of agents:.
type Agent struct {
	Email       string `yaml:"email"`        // login, unique (case-insensitive); required
	Name        string `yaml:"name"`         // display name
	Role        string `yaml:"role"`         // agent | admin; default agent
	Password    string `yaml:"password"`     // initial password; required (use ${NAME} to keep it out of the file)
	WeComUserID string `yaml:"wecom_userid"` // Work WeChat user id, to answer from WeCom; optional, unique
	SlackUser   string `yaml:"slack_user"`   // Slack user id, to answer from Slack; optional, unique
}

// SetDefaults implements Defaulter.
func (a *Agent) SetDefaults() { a.Role = RoleAgent }

// Default returns the built-in configuration, which `kefu serve` runs
// without a file: the web channel alone (when the web channel type is
// registered) on :8080, SQLite and media under ./data, the in-process bus.
// node_id is $HOSTNAME, or "kefu-1" when that is unset or empty.
func Default() *Config {
	c := defaults(os.LookupEnv)
	if newWeb, ok := channelRegistry.lookup("web"); ok {
		c.Channels["web"] = &ChannelInstance{Name: "web", Type: "web", Enabled: true, Config: newWeb()}
	}
	return c
}

// defaults returns the defaults of every fixed section, with no channels or
// pushers: those a file has are the ones it lists.
func defaults(lookupEnv func(string) (string, bool)) *Config {
	nodeID, _ := lookupEnv("HOSTNAME")
	if nodeID == "" {
		nodeID = "kefu-1"
	}
	return &Config{
		Server: Server{Addr: ":8080", IdleTimeout: DefaultIdleTimeout},
		NodeID: nodeID,
		Store:  Store{Driver: StoreSQLite, DSN: "data/kefu.db", Sync: SyncNormal},
		Media:  Media{Driver: MediaLocal, Dir: "data/media", MaxBytes: 20 << 20},
		Bus:    Bus{Driver: BusMemory},
		Routing: Routing{Strategy: StrategyLeastBusy, MaxOpenPerAgent: 8, ReopenWithin: 168 * time.Hour, OfflineReply: DefaultOfflineReply,
			BusyReply: DefaultBusyReply},
		Log:      Log{Level: "info", Format: LogText},
		Channels: map[string]*ChannelInstance{},
		Push:     map[string]*PusherInstance{},
	}
}

// Validate reports every problem in c as *FieldError values with full key
// paths ("store.dsn", "agents[1].email", "channels.shop.token"), joined.
// A disabled channel or pusher is checked for every problem but those only
// of a running instance (a missing secret: FieldError.OnlyEnabled).
func (c *Config) Validate() error {
	errs := []error{
		Prefix("server", c.Server.Validate()),
		Prefix("store", c.Store.Validate()),
		Prefix("media", c.Media.Validate()),
		Prefix("bus", c.Bus.Validate()),
		Prefix("routing", c.Routing.Validate()),
		Prefix("log", c.Log.Validate()),
		Prefix("agents", validateAgents(c.Agents)),
	}
	if strings.TrimSpace(c.NodeID) == "" {
		errs = append(errs, Errorf("node_id", "required"))
	}
	if c.Media.Driver == MediaPostgres && c.Store.Driver != StorePostgres {
		errs = append(errs, Errorf("media.driver", "postgres keeps files in the PostgreSQL store's database and needs store.driver: postgres; store.driver is %q", c.Store.Driver))
	}
	single := map[string]string{} // type → the first enabled instance of a SingleInstance type
	shared := map[string]string{} // type → the first enabled instance of a ProcessShared type
	for _, ci := range c.channels(false) {
		if !ci.Enabled {
			if ci.Config != nil {
				errs = append(errs, dropOnlyEnabled(Prefix("channels."+ci.Name, ci.Config.Validate())))
			}
			continue
		}
		if ci.Config != nil {
			errs = append(errs, Prefix("channels."+ci.Name, ci.Config.Validate()))
		}
		if u, ok := ci.Config.(PublicURLUser); ok && c.Server.PublicURL == "" {
			if key := u.NeedsPublicURL(); key != "" {
				errs = append(errs, Errorf("channels."+ci.Name+"."+key, "needs server.public_url (the URL the provider calls back)"))
			}
		}
		if _, ok := ci.Config.(SingleInstance); ok {
			if first, dup := single[ci.Type]; dup {
				errs = append(errs, Errorf("channels."+ci.Name, "only one channel of type %s may be enabled, and %s is: its paths are fixed", ci.Type, first))
			} else {
				single[ci.Type] = ci.Name
			}
		}
		if ps, ok := ci.Config.(ProcessShared); ok {
			if first, seen := shared[ci.Type]; !seen {
				shared[ci.Type] = ci.Name
			} else if key, v := ps.ProcessShared(); v != "" {
				if _, firstV := c.Channels[first].Config.(ProcessShared).ProcessShared(); firstV != "" && firstV != v {
					errs = append(errs, Errorf("channels."+ci.Name+"."+key, "must be the same as channels.%s.%s (%s): the %s channels of one process share it; got %s", first, key, firstV, ci.Type, v))
				}
			}
		}
	}
	apps := map[string]string{} // topic → the first enabled pusher for it
	for _, pi := range c.pushers(false) {
		if pi.Config == nil {
			continue
		}
		err := Prefix("push."+pi.Name, pi.Config.Validate())
		if !pi.Enabled {
			err = dropOnlyEnabled(err)
		}
		errs = append(errs, err)
		if app, ok := pi.Config.(PushApp); ok && pi.Enabled && app.PushTopic() != "" {
			if first, dup := apps[app.PushTopic()]; dup {
				errs = append(errs, Errorf("push."+pi.Name+".topic", "push.%s pushes for %s already: each app has one pusher, or its devices would be pushed twice", first, app.PushTopic()))
			} else {
				apps[app.PushTopic()] = pi.Name
			}
		}
	}
	return errors.Join(errs...)
}

// Validate checks addr, public_url, trusted_proxies and idle_timeout.
func (s *Server) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(s.Addr); err != nil {
		errs = append(errs, Errorf("addr", "must be host:port (like \":8080\" or \"127.0.0.1:8080\"); got %q", s.Addr))
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		errs = append(errs, Errorf("addr", "port must be a number from 0 to 65535; got %q", port))
	}
	if s.PublicURL != "" {
		errs = append(errs, URL("public_url", s.PublicURL))
	}
	for i, p := range s.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			errs = append(errs, Errorf("trusted_proxies["+strconv.Itoa(i)+"]", "must be a CIDR like 10.0.0.0/8 or an IP address; got %q", p))
		}
	}
	if s.IdleTimeout < time.Second { // below a second keep-alive is moot: a unit slip ("120ms" for "120s")
		errs = append(errs, Errorf("idle_timeout", "must be at least 1s (like \"2m\"); got %s", s.IdleTimeout))
	}
	return errors.Join(errs...)
}

// TrustedPrefixes returns trusted_proxies parsed; a bare IP is a /32 (IPv4)
// or /128 (IPv6) prefix. It fails only when Validate does.
func (s *Server) TrustedPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(s.TrustedProxies))
	for _, p := range s.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			return nil, err
		}
		out = append(out, pfx)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Validate checks driver, dsn and sync.
func (s *Store) Validate() error {
	errs := []error{
		OneOf("driver", s.Driver, StoreSQLite, StorePostgres),
		OneOf("sync", s.Sync, SyncNormal, SyncFull),
	}
	isURL := strings.HasPrefix(s.DSN, "postgres://") || strings.HasPrefix(s.DSN, "postgresql://")
	switch {
	case s.DSN == "":
		errs = append(errs, Errorf("dsn", "required"))
	case s.Driver == StorePostgres && !isURL:
		errs = append(errs, Errorf("dsn", "must be a postgres:// or postgresql:// URL when driver is postgres; got %q", Redact(s.DSN)))
	case s.Driver == StoreSQLite && isURL:
		errs = append(errs, Errorf("dsn", "is a PostgreSQL URL but driver is sqlite (set driver: postgres)"))
	}
	return errors.Join(errs...)
}

// Validate checks driver, dir and max_bytes. That driver postgres has a
// postgres store is checked by Config.Validate.
func (m *Media) Validate() error {
	errs := []error{OneOf("driver", m.Driver, MediaLocal, MediaPostgres)}
	if m.Dir == "" && m.Driver == MediaLocal {
		errs = append(errs, Errorf("dir", "required when driver is local"))
	}
	if m.MaxBytes <= 0 {
		errs = append(errs, Errorf("max_bytes", "must be greater than 0; got %d", m.MaxBytes))
	}
	return errors.Join(errs...)
}

// Validate checks driver, url and namespace, reporting every error.
func (b *Bus) Validate() error {
	var errs []error
	if b.Namespace != "" && !namespaceRE.MatchString(b.Namespace) {
		errs = append(errs, Errorf("namespace", "only letters, digits, '-' and '_', at most 32; got %q", b.Namespace))
	}
	return errors.Join(append(errs, b.validateURL())...)
}

// validateURL checks driver and url.
func (b *Bus) validateURL() error {
	var schemes []string
	switch b.Driver {
	case BusMemory:
		return nil
	case BusRedis:
		schemes = []string{"redis", "rediss"}
	case BusNATS:
		schemes = []string{"nats"}
	default:
		return OneOf("driver", b.Driver, BusMemory, BusRedis, BusNATS)
	}
	want := strings.Join(schemes, ":// or ") + "://"
	if b.URL == "" {
		return Errorf("url", "required when driver is %s (a %s URL)", b.Driver, want)
	}
	u, err := url.Parse(b.URL)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return Errorf("url", "must be a %s URL when driver is %s; got %q", want, b.Driver, Redact(b.URL))
	}
	return nil
}

var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// kvPassword is a password in a key=value connection string
// ("host=db password=secret").
var kvPassword = regexp.MustCompile(`(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact hides the password of a connection string (a URL's, or a
// key=value string's) for a message or a log line.
func Redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
	}
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}

// Validate checks strategy, max_open_per_agent and reopen_within.
func (r *Routing) Validate() error {
	errs := []error{OneOf("strategy", r.Strategy, StrategyRoundRobin, StrategyLeastBusy)}
	if r.MaxOpenPerAgent < 1 {
		errs = append(errs, Errorf("max_open_per_agent", "must be at least 1; got %d", r.MaxOpenPerAgent))
	}
	if r.ReopenWithin < 0 {
		errs = append(errs, Errorf("reopen_within", "must not be negative; got %s", r.ReopenWithin))
	}
	return errors.Join(errs...)
}

// Validate checks level and format.
func (l *Log) Validate() error {
	return errors.Join(
		OneOf("level", l.Level, "debug", "info", "warn", "error"),
		OneOf("format", l.Format, LogText, LogJSON),
	)
}

// SlogLevel returns level as a slog.Level (info if it is not valid).
func (l *Log) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// Validate checks one agent on its own: email, role and password.
func (a *Agent) Validate() error {
	var errs []error
	if a.Email == "" {
		errs = append(errs, Errorf("email", "required"))
	} else if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Name != "" || addr.Address != a.Email {
		errs = append(errs, Errorf("email", "must be an email address like alice@example.com; got %q", a.Email))
	}
	errs = append(errs, OneOf("role", a.Role, RoleAgent, RoleAdmin))
	switch {
	case a.Password == "":
		errs = append(errs, Errorf("password", "required"))
	case core.PasswordProblem(a.Password) != "":
		errs = append(errs, Errorf("password", "%s", core.PasswordProblem(a.Password)))
	}
	if a.WeComUserID != "" && !core.ValidWeComUserID(a.WeComUserID) {
		errs = append(errs, Errorf("wecom_userid", "%s; got %q", core.WeComUserIDRule, a.WeComUserID))
	}
	if a.SlackUser != "" && !core.ValidSlackUser(a.SlackUser) {
		errs = append(errs, Errorf("slack_user", "%s; got %q", core.SlackUserRule, a.SlackUser))
	}
	return errors.Join(errs...)
}

// validateAgents checks each agent, and that emails (case-insensitive),
// WeCom user ids and Slack users are not shared. Keys are relative to
// agents: ("[1].email").
func validateAgents(agents []Agent) error {
	var errs []error
	emails := map[string]int{}
	wecom := map[string]int{}
	slack := map[string]int{}
	unique := func(seen map[string]int, i int, key, v string) {
		if v == "" {
			return
		}
		if first, dup := seen[v]; dup {
			errs = append(errs, Errorf(fmt.Sprintf("[%d].%s", i, key), "same as agents[%d]; must be unique", first))
			return
		}
		seen[v] = i
	}
	for i := range agents {
		a := &agents[i]
		errs = append(errs, Prefix(fmt.Sprintf("[%d]", i), a.Validate()))
		unique(emails, i, "email", strings.ToLower(a.Email))
		unique(wecom, i, "wecom_userid", strings.ToLower(a.WeComUserID)) // Work WeChat ignores case
		unique(slack, i, "slack_user", a.SlackUser)
	}
	return errors.Join(errs...)
}
