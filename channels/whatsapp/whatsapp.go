// Package whatsapp is kefu's WhatsApp channel (type "whatsapp"), on Meta's
// WhatsApp Business Cloud API: customers write to the business's WhatsApp
// number, Meta posts their messages to /webhooks/NAME, and agents' replies go
// out through the Graph API's /{phone_number_id}/messages. The Cloud API is
// small, so this is plain net/http.
//
// What the channel guarantees:
//   - Webhooks are checked before anything is read: the X-Hub-Signature-256
//     HMAC of the raw body with the app secret, in constant time.
//   - A POST is answered 200 only once everything in it is committed; if any
//     part fails it is answered 503 and Meta sends it again. Messages are
//     stored once by their wamid, so that retry (and Meta's own, for days)
//     is safe.
//   - Media is fetched into kefu's media storage while the webhook is
//     handled, since Meta's download URLs expire.
//   - Statuses (sent, delivered, read, failed) only move a message forward,
//     whatever order they arrive in.
//   - The 24-hour customer-service window is enforced before sending
//     (channels.Windowed); outside it an agent can send the configured
//     template instead (core.Service.SendTemplate).
//
// Setup, YAML and limits: docs/channels/whatsapp.md.
package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Type is the channel type name.
const Type = "whatsapp"

// Window is WhatsApp's customer-service window: after the customer's last
// message the business may write freely for 24 hours, and only send
// approved templates after that.
const Window = 24 * time.Hour

// Defaults of the config.
const (
	DefaultAPIBase    = "https://graph.facebook.com"
	DefaultAPIVersion = "v21.0"
)

// Limits kefu applies.
const (
	// MaxBodyBytes caps a webhook body. Meta batches at most a few hundred
	// updates per POST, far below this.
	MaxBodyBytes = 4 << 20
	// apiTimeout bounds one Graph API request (a send, a media lookup or
	// download); uploadTimeout an upload, which may be up to
	// media.max_bytes on a slow uplink (the outbox gives such a send
	// bridge.DelivererConfig.MediaSendTimeout in all).
	apiTimeout    = 60 * time.Second
	uploadTimeout = 4 * time.Minute
	// maxIDLen bounds wamids, wa_ids and BSUIDs; longer ones are ignored.
	maxIDLen = 256
)

// Config is the channel's section of kefu.yaml.
type Config struct {
	// PhoneNumberID is the business phone number's id in the WhatsApp
	// Business API (not the number itself). Webhook changes for other
	// numbers of the same account are ignored.
	PhoneNumberID string `yaml:"phone_number_id"`
	// AccessToken is the bearer token for the Graph API: a system user's
	// permanent token with whatsapp_business_messaging.
	AccessToken string `yaml:"access_token"`
	// AppSecret is the Meta app's secret; it keys X-Hub-Signature-256.
	AppSecret string `yaml:"app_secret"`
	// VerifyToken is the string you type into the Meta app's webhook
	// settings; kefu answers the verification handshake only for it.
	VerifyToken string `yaml:"verify_token"`
	// APIBase is the Graph API's base URL (a proxy or a test server).
	APIBase string `yaml:"api_base"`
	// APIVersion is the Graph API version in request paths.
	APIVersion string `yaml:"api_version"`
	// Templates are approved message templates an agent may send, by the
	// name kefu knows them by. "reopen" is the one offered when the 24-hour
	// window has closed.
	Templates map[string]Template `yaml:"templates"`
}

// Template is an approved WhatsApp message template.
type Template struct {
	// Name is the template's name in WhatsApp Manager.
	Name string `yaml:"name"`
	// Language is the template's language code, e.g. en_US.
	Language string `yaml:"language"`
	// Components fill the template's variables, if it has any.
	Components []Component `yaml:"components"`
}

// Component fills one part of a template.
type Component struct {
	// Type is header, body or button.
	Type string `yaml:"type"`
	// SubType is a button's kind: quick_reply, url or copy_code.
	SubType string `yaml:"sub_type"`
	// Index is a button's position, from 0.
	Index int `yaml:"index"`
	// Parameters fill the component's variables in order (or by name).
	Parameters []Parameter `yaml:"parameters"`
}

// Parameter is one value of a template variable.
type Parameter struct {
	// Type is text, payload (quick-reply buttons), image, document or video
	// (media headers).
	Type string `yaml:"type"`
	// Name is the variable's name, for templates with named parameters.
	Name string `yaml:"parameter_name"`
	// Text is the value of a text parameter (also a url button's suffix, or
	// a copy_code button's coupon code: up to 15 letters and digits, sent
	// as a coupon_code parameter).
	Text string `yaml:"text"`
	// Payload is what a quick-reply button sends back when tapped.
	Payload string `yaml:"payload"`
	// Link is the https URL of a media header.
	Link string `yaml:"link"`
}

var (
	apiVersionRe = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)
	digitsRe     = regexp.MustCompile(`^[0-9]+$`)
	templateRe   = regexp.MustCompile(`^[a-z0-9_]+$`)
	languageRe   = regexp.MustCompile(`^[a-z]{2,3}(_[A-Za-z]{2,4})?$`)
)

// Validate implements config.Section: every problem at once.
func (c *Config) Validate() error {
	errs := []error{
		config.Required("phone_number_id", c.PhoneNumberID),
		config.Required("access_token", c.AccessToken),
		config.Required("app_secret", c.AppSecret),
		config.Required("verify_token", c.VerifyToken),
		config.URL("api_base", c.APIBase),
	}
	if c.PhoneNumberID != "" && !digitsRe.MatchString(c.PhoneNumberID) {
		errs = append(errs, config.Errorf("phone_number_id", "must be the number's id (digits), not %q", c.PhoneNumberID))
	}
	if !apiVersionRe.MatchString(c.APIVersion) {
		errs = append(errs, config.Errorf("api_version", "must look like v21.0, not %q", c.APIVersion))
	}
	names := make([]string, 0, len(c.Templates))
	for k := range c.Templates {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		errs = append(errs, config.Prefix("templates."+k, c.Templates[k].validate()))
	}
	return errors.Join(errs...)
}

func (t Template) validate() error {
	var errs []error
	if !templateRe.MatchString(t.Name) {
		errs = append(errs, config.Errorf("name", "required: the template's name in WhatsApp Manager (lowercase letters, digits, _)"))
	}
	if !languageRe.MatchString(t.Language) {
		errs = append(errs, config.Errorf("language", "required: a language code such as en_US or pt_BR, not %q", t.Language))
	}
	for i, comp := range t.Components {
		key := fmt.Sprintf("components[%d]", i)
		switch comp.Type {
		case "header", "body":
			if comp.SubType != "" || comp.Index != 0 {
				errs = append(errs, config.Errorf(key, "sub_type and index are for buttons"))
			}
		case "button":
			if comp.SubType != "quick_reply" && comp.SubType != "url" && comp.SubType != "copy_code" {
				errs = append(errs, config.Errorf(key+".sub_type", "must be quick_reply, url or copy_code for a button"))
			}
			if comp.Index < 0 || comp.Index > 9 {
				errs = append(errs, config.Errorf(key+".index", "must be between 0 and 9"))
			}
		default:
			errs = append(errs, config.Errorf(key+".type", "must be header, body or button, not %q", comp.Type))
		}
		for j, p := range comp.Parameters {
			pkey := fmt.Sprintf("%s.parameters[%d]", key, j)
			switch p.Type {
			case "text":
				if p.Text == "" {
					errs = append(errs, config.Errorf(pkey+".text", "required for a text parameter"))
				} else if strings.EqualFold(comp.SubType, "copy_code") && !couponCode.MatchString(p.Text) {
					errs = append(errs, config.Errorf(pkey+".text", "a copy_code button's coupon code has 1 to 15 letters and digits, not %q", p.Text))
				}
			case "payload":
				if p.Payload == "" {
					errs = append(errs, config.Errorf(pkey+".payload", "required for a payload parameter"))
				}
			case "image", "document", "video":
				if !strings.HasPrefix(p.Link, "https://") {
					errs = append(errs, config.Errorf(pkey+".link", "required for a %s parameter: an https:// URL", p.Type))
				}
			default:
				errs = append(errs, config.Errorf(pkey+".type", "must be text, payload, image, document or video, not %q", p.Type))
			}
		}
	}
	return errors.Join(errs...)
}

// couponCode is what WhatsApp takes as a copy-code button's coupon code.
var couponCode = regexp.MustCompile(`^[A-Za-z0-9]{1,15}$`)

func init() {
	channels.Register(Type, func() config.Section {
		return &Config{APIBase: DefaultAPIBase, APIVersion: DefaultAPIVersion}
	}, func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
		return New(name, *sec.(*Config), deps)
	})
}

// Channel is one WhatsApp channel instance: one business phone number.
type Channel struct {
	name   string
	cfg    Config
	base   string // api_base + "/" + api_version, without a trailing slash
	svc    *core.Service
	media  *media.Store
	client *http.Client
	// uploader is client with uploadTimeout, for media uploads.
	uploader *http.Client
	log      *slog.Logger
	now      func() time.Time

	// health is the reason the channel is unusable (the access token was
	// refused), or "" when it is fine. Checked by /readyz.
	healthMu sync.Mutex
	health   string

	// sent maps wamids of recent sends to kefu's message ids, for status
	// webhooks that arrive before the send is recorded (see statuses.go).
	sent *recent[int64]
	// seen holds wamids committed recently, so a retried batch does not
	// fetch their media again.
	seen *recent[struct{}]
	// aliases caches the identity a BSUID resolved to (see identity.go).
	aliases *recent[string]
	// uploads caches the WhatsApp media id of a stored file kefu uploaded.
	uploads *recent[string]
}

// New builds a channel instance from a validated config.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	if deps.Service == nil {
		return nil, errors.New("whatsapp: no core service")
	}
	if deps.Media == nil {
		return nil, errors.New("whatsapp: no media store")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Channel{
		name:     name,
		cfg:      cfg,
		base:     strings.TrimRight(cfg.APIBase, "/") + "/" + cfg.APIVersion,
		svc:      deps.Service,
		media:    deps.Media,
		client:   &http.Client{Timeout: apiTimeout},
		uploader: &http.Client{Timeout: uploadTimeout},
		log:      log.With("channel", name),
		now:      time.Now,
		sent:     newRecent[int64](10_000, 10*time.Minute),
		seen:     newRecent[struct{}](10_000, time.Hour),
		aliases:  newRecent[string](10_000, 24*time.Hour),
		uploads:  newRecent[string](1_000, 24*time.Hour),
	}
	if deps.PublicURL != "" {
		c.log.Info("whatsapp: set the Meta app's callback URL", "url", strings.TrimRight(deps.PublicURL, "/")+"/webhooks/"+name)
	}
	return c, nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// ReplyWindow implements channels.Windowed: the core refuses replies (other
// than templates) more than 24 hours after the customer's last message.
func (c *Channel) ReplyWindow() time.Duration { return Window }

// Templates lists the names of the configured templates, sorted: what an
// agent may pass to core.Service.SendTemplate for a conversation of this
// channel.
func (c *Channel) Templates() []string {
	names := make([]string, 0, len(c.cfg.Templates))
	for k := range c.cfg.Templates {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// Check implements channels.Checker: the channel is unusable once the Graph
// API has refused its access token (error 190), until a later request
// succeeds (a replaced token takes a restart).
func (c *Channel) Check(context.Context) error {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if c.health != "" {
		return errors.New(c.health)
	}
	return nil
}

func (c *Channel) setHealth(problem string) {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if c.health != problem {
		if problem != "" {
			c.log.Error("whatsapp: channel unusable", "reason", problem)
		} else {
			c.log.Info("whatsapp: channel usable again")
		}
	}
	c.health = problem
}

// recent is a small map whose entries expire; when full it drops the
// expired entries, and if that is not enough, everything. It is a cache:
// losing an entry costs a store read or a repeated fetch, never correctness.
type recent[V any] struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	m   map[string]recentEntry[V]
	now func() time.Time
}

type recentEntry[V any] struct {
	v  V
	at time.Time
}

func newRecent[V any](max int, ttl time.Duration) *recent[V] {
	return &recent[V]{max: max, ttl: ttl, m: map[string]recentEntry[V]{}, now: time.Now}
}

func (r *recent[V]) get(k string) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[k]
	if !ok || r.now().Sub(e.at) > r.ttl {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (r *recent[V]) put(k string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if len(r.m) >= r.max {
		for k, e := range r.m {
			if now.Sub(e.at) > r.ttl {
				delete(r.m, k)
			}
		}
		if len(r.m) >= r.max {
			clear(r.m)
		}
	}
	r.m[k] = recentEntry[V]{v: v, at: now}
}

var (
	_ channels.Channel  = (*Channel)(nil)
	_ channels.Windowed = (*Channel)(nil)
	_ channels.Checker  = (*Channel)(nil)
	_ http.Handler      = (*Channel)(nil)
	_ bridge.Sender     = (*Channel)(nil)
)
