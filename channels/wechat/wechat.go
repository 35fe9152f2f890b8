// Package wechat is kefu's WeChat Official Account channel (type "wechat"):
// customers write to the company's Official Account (公众号), WeChat posts
// their messages to /webhooks/NAME, and agents' replies go back through the
// customer-service message API (客服消息). It is built on
// github.com/silenceper/wechat/v2's sub-packages (never its root package,
// whose init turns the global logrus logger to debug and logs customers'
// messages), with the shared pieces in channels/wechat/wxapi.
//
// What the channel guarantees:
//   - Callbacks are checked before anything is read: the SHA-1 signature in
//     constant time, a timestamp within wxapi.MaxSkew, and in safe mode the
//     msg_signature over the encrypted body and the AppID sealed in it. A
//     bad one is answered 403 and stores nothing (the library alone would
//     answer 200).
//   - Plaintext, compatible and safe (AES) mode are all accepted, as the
//     encrypt_type parameter says.
//   - A callback is answered "success" once its message is committed, never
//     with a passive reply, so WeChat's 5-second wait is not spent on
//     agents. WeChat's retries are stored once: by MsgId, or by
//     FromUserName + CreateTime (+ event) for events.
//   - Media is fetched through the media API while the callback is handled
//     and kept in kefu's media storage. When WeChat's media API is too slow
//     for the 5 seconds, the callback is committed as a job in this
//     channel's outbox and answered; the job fetches the media and stores
//     the message (so it may land after messages the customer sent later).
//   - Replies go out through the outbox (bridge.Sender): text, images
//     (uploaded as temporary media) and voice. errcode 45015 (the 48-hour
//     window has closed) and 45047 (20 messages since the customer last
//     wrote) fail the message with a reason the agent sees; the 48-hour
//     window is known to the core (channels.Windowed), so the console warns
//     before sending.
//   - The access token is the stable one (UseStableAK), which a fetch on
//     another node does not invalidate; when WeChat rejects it anyway
//     (40001, 40014, 42001) it is dropped and the call retried once.
//   - api_base is honoured for every call, the library's included, through
//     wxapi's one process-wide hook; all wechat instances in one process
//     must share api_base.
//
// Setup, YAML and limits: docs/channels/wechat.md.
package wechat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/officialaccount"
	offConfig "github.com/silenceper/wechat/v2/officialaccount/config"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Type is the channel type name.
const Type = "wechat"

// Window is WeChat's customer-service window: an Official Account may send
// customer-service messages for 48 hours after the customer last wrote
// (or followed, clicked a menu, scanned a code).
const Window = 48 * time.Hour

// DefaultAPIBase is WeChat's Official Account API.
const DefaultAPIBase = "https://" + wxapi.OfficialAccountHost

// Limits kefu applies.
const (
	// MaxBodyBytes caps a callback body. WeChat's messages are a few KB.
	MaxBodyBytes = 256 << 10
	// inlineMediaBudget is how long a callback waits for its media before
	// handing it to an outbox job: WeChat gives up on a callback after 5 s.
	inlineMediaBudget = 3 * time.Second
	// mediaGiveUp is how long a job keeps trying to fetch media before it
	// stores the message without it. WeChat keeps temporary media 3 days.
	mediaGiveUp = 12 * time.Hour
	// maxEchoStr bounds the verification echostr kefu echoes.
	maxEchoStr = 1024
)

// Config is the channel's section of kefu.yaml.
type Config struct {
	// AppID is the Official Account's AppID (开发者ID), "wx…".
	AppID string `yaml:"app_id"`
	// AppSecret is the Official Account's AppSecret (开发者密码).
	AppSecret string `yaml:"app_secret"`
	// Token is the token typed into the account's server configuration
	// (服务器配置); it keys the callback signature.
	Token string `yaml:"token"`
	// EncodingAESKey is the 43-character message key of the server
	// configuration. Required for compatible and safe mode; with it set,
	// kefu accepts whichever mode the account uses.
	EncodingAESKey string `yaml:"encoding_aes_key"`
	// APIBase is the Official Account API's base URL (a proxy or a test
	// server). Every wechat instance in one process must use the same one.
	APIBase string `yaml:"api_base"`
	// Welcome, when set, is sent to a customer who follows the account.
	Welcome string `yaml:"welcome"`
}

// ProcessShared implements config.ProcessShared: api_base is routed for
// the whole process (wxapi.Route), so enabled instances must share it. An
// api_base that does not parse gives "" (Validate reports it).
func (c *Config) ProcessShared() (key, value string) {
	u, err := wxapi.ParseBase(cmp.Or(c.APIBase, DefaultAPIBase))
	if err != nil {
		return "api_base", ""
	}
	return "api_base", u.String()
}

// Validate implements config.Section: every problem at once.
func (c *Config) Validate() error {
	errs := []error{
		config.Required("app_id", c.AppID),
		config.Required("app_secret", c.AppSecret),
		config.Required("token", c.Token),
		config.URL("api_base", c.APIBase),
	}
	if c.EncodingAESKey != "" {
		if err := wxapi.CheckAESKey(c.EncodingAESKey); err != nil {
			errs = append(errs, config.Errorf("encoding_aes_key", "%s", err))
		}
	}
	if c.APIBase != "" {
		if _, err := wxapi.ParseBase(c.APIBase); err != nil {
			errs = append(errs, config.Errorf("api_base", "must be an absolute http(s) URL without query"))
		}
	}
	if len(c.Welcome) > 2000 {
		errs = append(errs, config.Errorf("welcome", "at most 2000 bytes"))
	}
	return errors.Join(errs...)
}

func init() {
	channels.Register(Type, func() config.Section {
		return &Config{APIBase: DefaultAPIBase}
	}, func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
		return New(name, *sec.(*Config), deps)
	})
}

// Channel is one Official Account channel instance.
type Channel struct {
	name   string
	cfg    Config
	svc    *core.Service
	media  *media.Store
	log    *slog.Logger
	now    func() time.Time
	kicker *bridge.Notifier // nil without a bus: jobs wait for the outbox sweep
	tokens *wxapi.Tokens
	// replays refuses a signed query seen before with another body.
	replays wxapi.Replays
	// mediaBudget is how long a callback waits for its media
	// (inlineMediaBudget; tests shorten it).
	mediaBudget time.Duration
	// captionDue holds the messages whose image or voice went out and
	// whose caption (sent after it, as a text message) has not yet: a
	// retry sends the caption alone. In memory: a retry on another node
	// sends the media again.
	captionDue sync.Map // message ID → when its media went (time.Time)

	releaseOnce sync.Once
	release     func()
}

// New builds a channel instance. It routes api.weixin.qq.com to
// cfg.APIBase for the whole process until Close.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	if cfg.APIBase == "" {
		cfg.APIBase = DefaultAPIBase
	}
	if deps.Service == nil || deps.Media == nil {
		return nil, errors.New("wechat: Service and Media are required")
	}
	release, err := wxapi.Route(wxapi.OfficialAccountHost, cfg.APIBase)
	if err != nil {
		return nil, fmt.Errorf("wechat: %w", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	cache := wxapi.NewCache()
	oa := officialaccount.NewOfficialAccount(&offConfig.Config{
		AppID: cfg.AppID, AppSecret: cfg.AppSecret, Token: cfg.Token, EncodingAESKey: cfg.EncodingAESKey,
		Cache:       cache,
		UseStableAK: true, // a fetch on one node must not invalidate another node's token
	})
	c := &Channel{
		name:    name,
		cfg:     cfg,
		svc:     deps.Service,
		media:   deps.Media,
		log:     log.With("channel", name),
		now:     time.Now,
		tokens:  wxapi.NewTokens(cache, "stable_token", oa.GetAccessTokenContext),
		release: release,

		mediaBudget: inlineMediaBudget,
	}
	if deps.Bus != nil {
		c.kicker = bridge.NewNotifier(bridge.NotifierConfig{Node: deps.NodeID, Publisher: deps.Bus.Publisher(), Logger: c.log})
	}
	if deps.PublicURL != "" {
		c.log.Info("wechat: the server URL for the Official Account's server configuration", "url", strings.TrimRight(deps.PublicURL, "/")+"/webhooks/"+name)
	}
	return c, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// ReplyWindow implements channels.Windowed.
func (c *Channel) ReplyWindow() time.Duration { return Window }

// Close releases the api_base route. It is idempotent. A node calls it
// once its outbox deliveries and followers have stopped, so that none of
// them goes to the real host meanwhile.
func (c *Channel) Close() error {
	c.releaseOnce.Do(c.release)
	return nil
}

// Check implements channels.Checker: the channel is unusable when something
// replaced the library's HTTP client, or when WeChat refused the app's
// credentials at the last token fetch (a wrong secret, a server IP missing
// from the account's allow-list). It makes no network call.
func (c *Channel) Check(context.Context) error {
	if !wxapi.Installed() {
		return errors.New("silenceper/wechat's HTTP client was replaced; api_base is not honoured")
	}
	if code, ok := wxapi.Code(c.tokens.LastError()); ok {
		switch code {
		case wxapi.CodeInvalidAppID, wxapi.CodeInvalidSecret, wxapi.CodeIPNotAllowed, wxapi.CodeAppIDMissing, wxapi.CodeSecretMissing:
			return fmt.Errorf("access token request refused by WeChat: %w", c.tokens.LastError())
		}
	}
	return nil
}

var (
	_ channels.Channel  = (*Channel)(nil)
	_ io.Closer         = (*Channel)(nil)
	_ channels.Windowed = (*Channel)(nil)
	_ channels.Checker  = (*Channel)(nil)
	_ bridge.Sender     = (*Channel)(nil)
)
