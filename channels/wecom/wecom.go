// Package wecom is kefu's Work WeChat channel (type "wecom"): agents answer
// customers from the Work WeChat (企业微信) app on their phones. It is an
// agent-side channel: it has no customers of its own.
//
//   - Notifications: an agent with wecom_userid gets an app message when a
//     conversation is assigned or transferred to them (with the customer
//     messages that waited) and for each new customer message in their
//     conversations: "[#123 WeChat · 张三] text", plus images. The channel
//     learns of these by following the message log (bridge.FollowHandler),
//     from a durable cursor.
//   - Notifications and command answers go out through this channel's
//     outbox, one key per WeCom user: they are committed before they are
//     sent, survive a restart, keep their order per agent, and one agent's
//     rate limit (Work WeChat takes about 30 app messages per minute per
//     member) or failure delays only that agent. Sending from the follower
//     directly would stall every agent's notifications behind one failing
//     one, since the follower does not move on until a message is handled.
//   - Replies and commands arrive as the app's callbacks at /webhooks/NAME,
//     always encrypted: msg_signature is checked in constant time with a
//     fresh timestamp, the body decrypted with the EncodingAESKey and its
//     CorpID checked. A bad one is answered 403 and nothing is stored.
//   - "#123 text" answers conversation 123; a plain reply goes to the
//     conversation the agent last selected ("#123 …" or "/take 123") or, with
//     no selection, to their only open one; when a notification from another
//     conversation arrived since, kefu asks for "#123" and sends nothing.
//     Commands: /on, /off, /list, /take 123, /close [123],
//     /transfer 123 bob, /help. Replies go through core.Service.Reply, the
//     console's path.
//
// Setup, YAML, commands and limits: docs/channels/wecom.md.
package wecom

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silenceper/wechat/v2/credential"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// Type is the channel type name.
const Type = "wecom"

// DefaultAPIBase is Work WeChat's API.
const DefaultAPIBase = "https://" + wxapi.WorkHost

// Limits kefu applies.
const (
	// MaxBodyBytes caps a callback body.
	MaxBodyBytes = 64 << 10
	// maxEchoStr bounds the URL check's echostr.
	maxEchoStr = 1024
	// perMinute and perHour limit app messages to one member. Work
	// WeChat takes at most 30 a minute and 1,000 an hour per member per
	// app and silently drops the rest (errcode 0; "访问频率限制",
	// developer.work.weixin.qq.com/document/path/90454), so the limits are
	// sliding windows, exact, and what is over them waits in the outbox.
	perMinute = 30
	perHour   = 1000
	// backlogSize is how many waiting customer messages an assignment
	// notification shows.
	backlogSize = 10
	// agentsTTL is how long the agent list is cached.
	agentsTTL = 5 * time.Second
)

// Config is the channel's section of kefu.yaml.
type Config struct {
	// CorpID is the company's Work WeChat id (企业ID), "ww…".
	CorpID string `yaml:"corp_id"`
	// AgentID is the self-built app's AgentId (应用 AgentId).
	AgentID int64 `yaml:"agent_id"`
	// Secret is the app's Secret.
	Secret string `yaml:"secret"`
	// Token is the token of the app's API callback (接收消息 → API接收).
	Token string `yaml:"token"`
	// EncodingAESKey is the 43-character key of the app's API callback.
	EncodingAESKey string `yaml:"encoding_aes_key"`
	// APIBase is Work WeChat's API base URL (a proxy or a test server).
	// Every wecom instance in one process must use the same one.
	APIBase string `yaml:"api_base"`
	// ChannelNames are the names agents see for customer channel
	// instances in notifications ("[#123 WeChat · 张三]"), keyed by
	// instance name. Instances not listed show a name for their usual
	// instance name (wechat → WeChat, whatsapp → WhatsApp…) or the
	// instance name itself.
	ChannelNames map[string]string `yaml:"channel_names"`
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
		config.Required("corp_id", c.CorpID),
		config.Required("secret", c.Secret),
		config.Required("token", c.Token),
		config.Required("encoding_aes_key", c.EncodingAESKey),
		config.URL("api_base", c.APIBase),
	}
	switch {
	case c.AgentID == 0:
		errs = append(errs, config.MarkOnlyEnabled(config.Errorf("agent_id", "required when the channel is enabled: the app's AgentId, a positive number")))
	case c.AgentID < 0:
		errs = append(errs, config.Errorf("agent_id", "must be the app's AgentId, a positive number; got %d", c.AgentID))
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
	keys := make([]string, 0, len(c.ChannelNames))
	for k := range c.ChannelNames {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := c.ChannelNames[k]; strings.TrimSpace(v) == "" || len(v) > 64 {
			errs = append(errs, config.Errorf("channel_names."+k, "must be 1 to 64 bytes"))
		}
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

// Channel is one Work WeChat app.
type Channel struct {
	name    string
	cfg     Config
	svc     *core.Service
	store   core.Store
	media   *media.Store
	log     *slog.Logger
	now     func() time.Time
	kicker  *bridge.Notifier // nil without a bus: entries wait for the outbox sweep
	tokens  *wxapi.Tokens
	limiter *httpx.WindowLimiter
	handled callbacks // by MsgId, for Work WeChat's retries
	// claimToken names this instance in its claims of callbacks
	// (clusterOnce); prunedAt is when it last pruned them (unix nanoseconds).
	claimToken string
	prunedAt   atomic.Int64
	// pruning runs the pruning passes, on pruneCtx, which Close cancels;
	// pruneMu orders starting one against Close (pruneClosed).
	pruning     sync.WaitGroup
	pruneCtx    context.Context
	pruneStop   context.CancelFunc
	pruneMu     sync.Mutex
	pruneClosed bool
	// clustered: the bus is shared with other nodes (a retry may reach
	// another node), so callbacks are claimed in the store.
	clustered bool

	agentsMu sync.Mutex
	agents   []core.Agent
	agentsAt time.Time

	releaseOnce sync.Once
	release     func()
}

// New builds a channel instance. It routes qyapi.weixin.qq.com to
// cfg.APIBase for the whole process until Close.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	if cfg.APIBase == "" {
		cfg.APIBase = DefaultAPIBase
	}
	if deps.Service == nil || deps.Media == nil {
		return nil, errors.New("wecom: Service and Media are required")
	}
	release, err := wxapi.Route(wxapi.WorkHost, cfg.APIBase)
	if err != nil {
		return nil, fmt.Errorf("wecom: %w", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	cache := wxapi.NewCache()
	handle := credential.NewWorkAccessToken(cfg.CorpID, cfg.Secret, strconv.FormatInt(cfg.AgentID, 10), credential.CacheKeyWorkPrefix, cache)
	c := &Channel{
		name:    name,
		cfg:     cfg,
		svc:     deps.Service,
		store:   deps.Service.Store(),
		media:   deps.Media,
		log:     log.With("channel", name),
		now:     time.Now,
		tokens:  wxapi.NewTokens(cache, "gettoken", handle.GetAccessTokenContext),
		limiter: httpx.NewWindowLimiter(httpx.Window{N: perMinute, Span: time.Minute}, httpx.Window{N: perHour, Span: time.Hour}),
		release: release,
	}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	c.claimToken = hex.EncodeToString(tok[:])
	c.pruneCtx, c.pruneStop = context.WithCancel(context.Background())
	c.clustered = deps.Bus != nil && deps.Bus.Features().ConsumerGroups
	if deps.Bus != nil {
		c.kicker = bridge.NewNotifier(bridge.NotifierConfig{Node: deps.NodeID, Publisher: deps.Bus.Publisher(), Logger: c.log})
	}
	if deps.PublicURL != "" {
		c.log.Info("wecom: the URL for the app's API callback (接收消息)", "url", strings.TrimRight(deps.PublicURL, "/")+"/webhooks/"+name)
	}
	return c, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// Close releases the api_base route. It is idempotent. A node calls it
// once its outbox deliveries and followers have stopped, so that none of
// them goes to the real host meanwhile.
func (c *Channel) Close() error {
	// A pruning pass under way stops, and none starts after.
	c.pruneMu.Lock()
	c.pruneClosed = true
	c.pruneMu.Unlock()
	if c.pruneStop != nil {
		c.pruneStop()
	}
	c.pruning.Wait()
	c.releaseOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return nil
}

// Check implements channels.Checker: the channel is unusable when something
// replaced the library's HTTP client, or when Work WeChat refused the last
// access-token request (a wrong corp_id or secret, a server IP that is not
// among the app's trusted IPs). It makes no network call.
func (c *Channel) Check(context.Context) error {
	if !wxapi.Installed() {
		return errors.New("silenceper/wechat's HTTP client was replaced; api_base is not honoured")
	}
	var ae *wxapi.APIError
	if err := c.tokens.LastError(); errors.As(err, &ae) && ae.Code != wxapi.CodeSystemBusy {
		return fmt.Errorf("access token request refused by Work WeChat: %w", err)
	}
	return nil
}

// agentsList returns the agents, cached for agentsTTL.
func (c *Channel) agentsList(ctx context.Context) ([]core.Agent, error) {
	c.agentsMu.Lock()
	defer c.agentsMu.Unlock()
	if c.agents != nil && c.now().Sub(c.agentsAt) < agentsTTL {
		return c.agents, nil
	}
	as, err := c.store.Agents(ctx)
	if err != nil {
		return nil, err
	}
	c.agents, c.agentsAt = as, c.now()
	return as, nil
}

// forgetAgents drops the cached agent list.
func (c *Channel) forgetAgents() {
	c.agentsMu.Lock()
	c.agents = nil
	c.agentsMu.Unlock()
}

// agentByID returns the agent with id (ok false when there is none).
func (c *Channel) agentByID(ctx context.Context, id int64) (core.Agent, bool, error) {
	as, err := c.agentsList(ctx)
	if err != nil {
		return core.Agent{}, false, err
	}
	for _, a := range as {
		if a.ID == id {
			return a, true, nil
		}
	}
	return core.Agent{}, false, nil
}

// agentByUserID returns the agent whose wecom_userid is userID (Work
// WeChat user ids are case-insensitive). The list is read afresh, and
// cached for the notifications: a member writes seldom, and a link or
// deactivation changed in the console must apply to their next message,
// which a cached list could still give to the id's former agent.
func (c *Channel) agentByUserID(ctx context.Context, userID string) (core.Agent, bool, error) {
	c.forgetAgents()
	as, err := c.agentsList(ctx)
	if err != nil {
		return core.Agent{}, false, err
	}
	for _, a := range as {
		if a.WeComUserID != "" && strings.EqualFold(a.WeComUserID, userID) {
			return a, true, nil
		}
	}
	return core.Agent{}, false, nil
}

var (
	_ channels.Channel     = (*Channel)(nil)
	_ io.Closer            = (*Channel)(nil)
	_ channels.Checker     = (*Channel)(nil)
	_ bridge.MediaSender   = (*Channel)(nil)
	_ bridge.FollowHandler = (*Channel)(nil)
)
