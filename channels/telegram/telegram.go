// Package telegram is kefu's Telegram channel (type "telegram"): customers
// write to a bot in a private chat, agents answer through kefu.
//
// Updates arrive in one of two modes. In webhook mode Telegram posts them
// to /webhooks/NAME with the configured secret in
// X-Telegram-Bot-Api-Secret-Token; kefu answers 200 only after the update
// is stored, so Telegram retries anything kefu did not keep. In polling
// mode kefu runs its own getUpdates loop (the library's loop moves the
// offset before its handlers run): an update is stored before the offset
// moves past it. Both modes de-duplicate on update_id, so a repeated update
// is stored once.
//
// Replies go out through the outbox (bridge.Sender) with the bot API's
// sendMessage, sendPhoto and sendDocument, through github.com/go-telegram/bot.
// Setup and limits are in docs/channels/telegram.md.
package telegram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-telegram/bot"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Type is the channel type name.
const Type = "telegram"

// Modes of receiving updates.
const (
	ModeWebhook = "webhook"
	ModePolling = "polling"
)

// DefaultAPIBase is the Bot API server.
const DefaultAPIBase = "https://api.telegram.org"

// HeaderSecret carries the webhook secret on every update Telegram posts.
const HeaderSecret = "X-Telegram-Bot-Api-Secret-Token"

// AllowedUpdates are the update types kefu asks Telegram for, in both
// modes: new messages. Edits, reactions and group traffic are not asked for.
var AllowedUpdates = []string{"message"}

// Config is the channel's section of kefu.yaml.
type Config struct {
	// Token is the bot's token from @BotFather ("123456:ABC-…").
	Token string `yaml:"token"`
	// Mode is how updates arrive: webhook (Telegram posts to
	// /webhooks/NAME) or polling (kefu calls getUpdates).
	Mode string `yaml:"mode"`
	// WebhookSecret is the secret_token given to setWebhook, which Telegram
	// sends back in X-Telegram-Bot-Api-Secret-Token. Required in webhook
	// mode: 1-256 characters of A-Z, a-z, 0-9, _ and -.
	WebhookSecret string `yaml:"webhook_secret"`
	// APIBase is the Bot API server (a proxy, a local bot API server, or a
	// fake in tests).
	APIBase string `yaml:"api_base"`
	// Greeting is sent back, as a bot message, when a customer sends
	// /start (opening the bot). Empty: no greeting.
	Greeting string `yaml:"greeting"`
	// SetWebhook makes kefu call setWebhook with {public_url}/webhooks/NAME
	// and the secret when it starts (webhook mode). Off by default: run
	// `kefu telegram set-webhook` once instead.
	SetWebhook bool `yaml:"set_webhook"`
	// PollTimeout is the long-poll wait of one getUpdates call (polling
	// mode), in whole seconds.
	PollTimeout time.Duration `yaml:"poll_timeout"`
}

var (
	tokenPattern  = regexp.MustCompile(`^[0-9]+:[A-Za-z0-9_-]+$`)
	secretPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)
)

// Limits of the Bot API that the config is checked against.
const (
	maxTextLen    = 4096 // characters (UTF-16 code units) of a message
	maxCaptionLen = 1024 // characters of a photo or document caption
	maxPollWait   = 10 * time.Minute
)

// NeedsPublicURL implements config.PublicURLUser: set_webhook registers
// server.public_url with Telegram.
func (c *Config) NeedsPublicURL() string {
	if c.SetWebhook {
		return "set_webhook"
	}
	return ""
}

// Validate implements config.Section.
func (c *Config) Validate() error {
	var errs []error
	if c.Token == "" {
		errs = append(errs, config.Required("token", c.Token))
	} else if !tokenPattern.MatchString(c.Token) {
		// Never echo the token: it is a secret.
		errs = append(errs, config.Errorf("token", "must look like 123456:ABC-DEF… (the token @BotFather gave)"))
	}
	errs = append(errs, config.OneOf("mode", c.Mode, ModeWebhook, ModePolling))
	if c.Mode == ModeWebhook {
		if c.WebhookSecret == "" {
			errs = append(errs, config.Required("webhook_secret", c.WebhookSecret))
		} else if !secretPattern.MatchString(c.WebhookSecret) {
			errs = append(errs, config.Errorf("webhook_secret", "must be 1-256 characters of A-Z, a-z, 0-9, _ and -"))
		}
	}
	if c.SetWebhook && c.Mode != ModeWebhook {
		errs = append(errs, config.Errorf("set_webhook", "only in webhook mode"))
	}
	errs = append(errs, config.URL("api_base", c.APIBase))
	if n := utf16Len(c.Greeting); n > maxTextLen {
		errs = append(errs, config.Errorf("greeting", "longer than Telegram's %d characters (%d)", maxTextLen, n))
	} else if c.Greeting != "" && strings.TrimSpace(c.Greeting) == "" {
		errs = append(errs, config.Errorf("greeting", "is blank; leave it empty to send none"))
	}
	if c.PollTimeout < time.Second || c.PollTimeout > maxPollWait || c.PollTimeout%time.Second != 0 {
		errs = append(errs, config.Errorf("poll_timeout", "must be whole seconds between 1s and %s", maxPollWait))
	}
	return errors.Join(errs...)
}

// DefaultConfig returns a section with every default.
func DefaultConfig() *Config {
	return &Config{Mode: ModeWebhook, APIBase: DefaultAPIBase, PollTimeout: 30 * time.Second}
}

func init() {
	channels.Register(Type, func() config.Section { return DefaultConfig() },
		func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
			return New(name, *sec.(*Config), deps)
		})
}

// Channel is one Telegram bot. It receives updates (ServeHTTP in webhook
// mode, Run in polling mode) and delivers replies (Send). Safe for
// concurrent use.
type Channel struct {
	name      string
	cfg       Config
	svc       *core.Service
	media     *media.Store
	log       *slog.Logger
	publicURL string

	bot    *bot.Bot     // every call but getUpdates
	files  *http.Client // downloads of customers' files
	poller *Poller      // polling mode only

	mu     sync.Mutex
	health error // why the channel is not usable (a rejected token); nil: fine
}

// New builds a channel instance. It makes no network call.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	if deps.Service == nil || deps.Media == nil {
		return nil, errors.New("telegram: needs the core service and media storage")
	}
	if cfg.SetWebhook && deps.PublicURL == "" {
		return nil, errors.New("telegram: set_webhook needs server.public_url")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Channel{
		name:      name,
		cfg:       cfg,
		svc:       deps.Service,
		media:     deps.Media,
		log:       log.With("channel", name),
		publicURL: deps.PublicURL,
		// Each call is bounded by its context (the outbox's send timeout,
		// the request's); this only stops a stuck connection.
		files: &http.Client{Timeout: 5 * time.Minute},
	}
	b, err := newBot(cfg)
	if err != nil {
		return nil, err
	}
	c.bot = b
	if cfg.Mode == ModePolling {
		c.poller = newPoller(c)
	}
	return c, nil
}

// newBot builds the Bot API client. It skips getMe, which would make
// building a channel depend on Telegram being reachable.
func newBot(cfg Config) (*bot.Bot, error) {
	client := &http.Client{Timeout: 5 * time.Minute}
	b, err := bot.New(cfg.Token,
		bot.WithServerURL(strings.TrimRight(cfg.APIBase, "/")),
		bot.WithSkipGetMe(),
		bot.WithHTTPClient(time.Minute, client),
		bot.WithErrorsHandler(func(error) {}), // unused: kefu runs no loop of the library's
	)
	if err != nil {
		return nil, fmt.Errorf("telegram: %w", err)
	}
	return b, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// Mode returns how the channel receives updates.
func (c *Channel) Mode() string { return c.cfg.Mode }

// Run implements channels.Runner. In polling mode it runs the getUpdates
// loop until ctx ends. In webhook mode it registers the webhook first when
// set_webhook is on (retrying until Telegram accepts), and returns.
//
// Telegram lets one client poll a bot at a time (a second getUpdates gets
// 409), so in polling mode the channel is Exclusive: the node runs Run under
// the cluster lease "run.NAME", on one node at a time, and may call it again
// after the lease moved (each call polls from the oldest unconfirmed update).
// In webhook mode every node runs it.
func (c *Channel) Run(ctx context.Context) error {
	switch {
	case c.poller != nil:
		return c.poller.Run(ctx)
	case c.cfg.SetWebhook:
		c.registerWebhook(ctx)
	}
	return nil
}

// Exclusive implements channels.Exclusive: polling runs on one node of a
// cluster at a time.
func (c *Channel) Exclusive() bool { return c.poller != nil }

// registerWebhook calls setWebhook until it succeeds or ctx ends.
func (c *Channel) registerWebhook(ctx context.Context) {
	url := WebhookURL(c.publicURL, c.name)
	for attempt := 1; ; attempt++ {
		err := setWebhook(ctx, c.bot, url, c.cfg.WebhookSecret)
		if err == nil {
			c.log.Info("telegram: webhook set", "url", url)
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.noteAPIError(err)
		wait := backoff(attempt, time.Minute)
		c.log.Warn("telegram: setWebhook failed; retrying", "url", url, "in", wait, "err", err)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// Check implements channels.Checker: the channel is not ready while
// Telegram rejects its token.
func (c *Channel) Check(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health
}

// noteAPIError records what a Bot API error says about the channel's
// health: a rejected token makes it unusable until a call succeeds.
func (c *Channel) noteAPIError(err error) {
	if errors.Is(err, bot.ErrorUnauthorized) || errors.Is(err, bot.ErrorNotFound) {
		c.mu.Lock()
		c.health = errors.New("the bot token is rejected by Telegram (check token)")
		c.mu.Unlock()
	}
}

// noteAPIOK records a successful Bot API call.
func (c *Channel) noteAPIOK() {
	c.mu.Lock()
	c.health = nil
	c.mu.Unlock()
}

// WebhookURL is where Telegram posts an instance's updates.
func WebhookURL(publicURL, name string) string {
	return strings.TrimRight(publicURL, "/") + "/webhooks/" + name
}

// backoff is the wait after the attempt-th consecutive failure: 100 ms
// doubling up to limit.
func backoff(attempt int, limit time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sleep waits d or until ctx ends; it reports whether d passed.
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

// utf16Len counts characters as Telegram limits them: UTF-16 code units.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// clip shortens s to at most n bytes of valid UTF-8.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

var (
	_ channels.Channel   = (*Channel)(nil)
	_ channels.Runner    = (*Channel)(nil)
	_ channels.Exclusive = (*Channel)(nil)
	_ channels.Checker   = (*Channel)(nil)
	_ http.Handler       = (*Channel)(nil)
	_ bridge.Sender      = (*Channel)(nil)
)
