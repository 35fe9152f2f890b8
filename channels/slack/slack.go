// Package slack is kefu's Slack channel (type "slack"): an agent-side
// channel in which every conversation, from any customer channel, becomes a
// thread in one support channel, and agents answer customers by replying in
// the thread.
//
// Two directions, two mechanisms:
//
//   - Mirroring (kefu → Slack) is a bridge.FollowHandler: the node's
//     follower hands Follow every message of every conversation in ID order
//     from a durable cursor. A conversation's first mirrored message posts
//     the parent message (customer, channel, first message, assignee, a link
//     to the console); later customer messages, replies made elsewhere,
//     notes, assignment changes and closes go into its thread. The thread ↔
//     conversation mapping lives in the store's settings (mapping.go), so it
//     survives restarts and works on any node. Posting failures are retried
//     by the follower; a 429 holds every call of the instance until its
//     Retry-After has passed (api.go). None of it touches customers'
//     delivery, which is the outbox's.
//
//   - Answering (Slack → kefu) arrives as Events API callbacks at
//     /webhooks/NAME/events, or over Socket Mode when app_token is set
//     (socket.go). A thread reply by a Slack user mapped to an agent
//     (agents' slack_user) becomes core.Service.Reply as that agent, "note:
//     …" becomes Service.Note (events.go).
//
// Setup, YAML and limits are in docs/channels/slack.md.
package slack

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
)

// Type is the channel type name.
const Type = "slack"

// DefaultAPIBase is Slack's Web API root. Method names are appended to it,
// so it keeps its trailing slash.
const DefaultAPIBase = "https://slack.com/api/"

// EventsPath is where an instance named name receives Events API requests.
func EventsPath(name string) string { return "/webhooks/" + name + "/events" }

// Config is the channel's section of kefu.yaml.
type Config struct {
	// BotToken is the app's Bot User OAuth Token (xoxb-…), used for every
	// Web API call.
	BotToken string `yaml:"bot_token"`
	// SigningSecret verifies Events API requests (the app's Basic
	// Information page). Required unless AppToken is set.
	SigningSecret string `yaml:"signing_secret"`
	// Channel is the ID of the support channel conversations are mirrored
	// into (C… for a public channel, G… or C… for a private one), not its
	// name. The bot must be a member.
	Channel string `yaml:"channel"`
	// AppToken is an app-level token (xapp-…) with connections:write. When
	// set, events arrive over Socket Mode instead of HTTP, for deployments
	// with no public URL.
	AppToken string `yaml:"app_token"`
	// APIBase is the Web API root (a proxy, or a fake in tests).
	APIBase string `yaml:"api_base"`
}

var channelID = regexp.MustCompile(`^[CG][A-Z0-9]{6,30}$`)

// Validate implements config.Section.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.BotToken == "":
		errs = append(errs, config.Required("bot_token", c.BotToken))
	case !strings.HasPrefix(c.BotToken, "xoxb-"):
		// Never echo a token: it is a secret.
		errs = append(errs, config.Errorf("bot_token", "must be a bot token (xoxb-…, the app's Bot User OAuth Token)"))
	}
	if c.AppToken != "" && !strings.HasPrefix(c.AppToken, "xapp-") {
		errs = append(errs, config.Errorf("app_token", "must be an app-level token (xapp-…) with connections:write"))
	}
	if c.SigningSecret == "" && c.AppToken == "" {
		errs = append(errs, config.MarkOnlyEnabled(config.Errorf("signing_secret", "required when the channel is enabled, unless app_token is set (Socket Mode)")))
	}
	switch {
	case c.Channel == "":
		errs = append(errs, config.Required("channel", c.Channel))
	case !channelID.MatchString(c.Channel):
		errs = append(errs, config.Errorf("channel", "must be a Slack channel ID such as C0123456789 (the channel's details show it), not a name; got %q", c.Channel))
	}
	errs = append(errs, config.URL("api_base", c.APIBase))
	return errors.Join(errs...)
}

func init() {
	channels.Register(Type, func() config.Section {
		return &Config{APIBase: DefaultAPIBase}
	}, func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
		return New(name, *sec.(*Config), deps)
	})
}

// Channel is one Slack channel instance. It is safe for concurrent use.
type Channel struct {
	name      string
	cfg       Config
	svc       *core.Service
	store     core.Store
	publicURL string
	log       *slog.Logger
	api       *api
	dedupe    *dedupe
	now       func() time.Time

	// notices holds ephemeral explanations to post; Run posts them, after
	// the event that caused them has been answered.
	notices chan notice

	mu     sync.Mutex
	health error  // set while Slack rejects the token
	botUID string // our bot's user id (auth.test)
}

// New builds a channel instance. It makes no network call: Run asks Slack
// who the bot is.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	if deps.Service == nil {
		return nil, errors.New("slack: no core service")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("channel", name)
	if cfg.APIBase == "" {
		cfg.APIBase = DefaultAPIBase
	}
	if !strings.HasSuffix(cfg.APIBase, "/") {
		cfg.APIBase += "/" // slack-go appends method names to it
	}
	c := &Channel{
		name:      name,
		cfg:       cfg,
		svc:       deps.Service,
		store:     deps.Service.Store(),
		publicURL: strings.TrimRight(deps.PublicURL, "/"),
		log:       log,
		dedupe:    newDedupe(dedupeSize),
		now:       time.Now,
		notices:   make(chan notice, noticeQueue),
	}
	opts := []slack.Option{slack.OptionAPIURL(cfg.APIBase)}
	if cfg.AppToken != "" {
		opts = append(opts, slack.OptionAppLevelToken(cfg.AppToken))
	}
	// No slack.OptionRetry: a 429 is handled by api's gate, which holds
	// every call of this instance (not only the one that was refused)
	// until Retry-After has passed, and the follower retries the message.
	c.api = newAPI(slack.New(cfg.BotToken, opts...), c.now, c.noteHealth)
	return c, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// Check implements channels.Checker: the channel is not ready while Slack
// rejects its token. A Slack outage or rate limit does not make it unready
// (nothing of the customers' traffic depends on Slack).
func (c *Channel) Check(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health
}

// noteHealth records what a Web API answer says about the token.
func (c *Channel) noteHealth(err error) {
	var se slack.SlackErrorResponse
	switch {
	case err == nil:
		c.mu.Lock()
		c.health = nil
		c.mu.Unlock()
	case errors.As(err, &se) && authErrors[se.Err]:
		c.mu.Lock()
		c.health = errors.New("Slack rejects the bot token (" + se.Err + "); check bot_token")
		c.mu.Unlock()
	}
}

// botUser returns our bot's user id, once auth.test has told it.
func (c *Channel) botUser() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.botUID
}

// Run implements channels.Runner. It learns the bot's identity, posts
// ephemeral notices and, with app_token set, runs the Socket Mode loop. It
// returns nil when ctx is done; Slack being unreachable never stops it.
//
// With app_token set the channel is Exclusive: events then arrive only over
// the socket, so the node that holds the cluster lease "run.NAME" runs all
// of Run (it handles the events, so it needs the bot's identity and posts
// the notices they queue), and Run is called again wherever the lease
// moves. Without app_token, events arrive over HTTP at any node, and every
// node runs Run.
func (c *Channel) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { c.whoAmI(ctx) })
	wg.Go(func() { c.postNotices(ctx) })
	if c.cfg.AppToken != "" {
		wg.Go(func() { c.runSocketMode(ctx) })
	}
	wg.Wait()
	return nil
}

// Exclusive implements channels.Exclusive: Socket Mode runs on one node of
// a cluster at a time.
func (c *Channel) Exclusive() bool { return c.cfg.AppToken != "" }

// whoAmI calls auth.test until it succeeds, to learn the bot's user id.
func (c *Channel) whoAmI(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		res, err := c.api.authTest(ctx)
		if err == nil {
			c.mu.Lock()
			c.botUID = res.UserID
			c.mu.Unlock()
			c.log.Info("slack: connected", "team", res.Team, "bot_user", res.UserID)
			return
		}
		if ctx.Err() != nil {
			return
		}
		d := backoff(attempt)
		c.log.Warn("slack: auth.test failed; retrying", "in", d, "err", err)
		if !sleep(ctx, d) {
			return
		}
	}
}

// backoff is the wait after the attempt-th consecutive failure: 1 s
// doubling up to a minute.
func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt, 6)
	return min(d, time.Minute)
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var (
	_ channels.Channel     = (*Channel)(nil)
	_ channels.Mounter     = (*Channel)(nil)
	_ channels.Runner      = (*Channel)(nil)
	_ channels.Exclusive   = (*Channel)(nil)
	_ channels.Checker     = (*Channel)(nil)
	_ bridge.FollowHandler = (*Channel)(nil)
)
