// Package webhook is kefu's generic HTTP channel (type "webhook"): a system
// of your own (a CRM, an in-house app, a chatbot gateway) posts customers'
// messages to /webhooks/NAME as signed JSON, and kefu posts agents' replies
// back to deliver_url, signed the same way. The wire format is in
// docs/channels/webhook.md.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Type is the channel type name.
const Type = "webhook"

// Headers of a signed request, in both directions.
const (
	HeaderTimestamp = "X-Kefu-Timestamp"     // unix seconds
	HeaderSignature = "X-Kefu-Signature-256" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// MaxSkew is how far a request's timestamp may be from kefu's clock.
const MaxSkew = 5 * time.Minute

// Config is the channel's section of kefu.yaml.
type Config struct {
	// Secret signs requests in both directions (HMAC-SHA256).
	Secret string `yaml:"secret"`
	// DeliverURL receives agents' replies as signed POSTs.
	DeliverURL string `yaml:"deliver_url"`
	// Timeout bounds one delivery request.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBodyBytes caps an inbound request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Validate implements config.Section.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, config.Required("secret", c.Secret), config.Required("deliver_url", c.DeliverURL))
	if c.DeliverURL != "" {
		errs = append(errs, config.URL("deliver_url", c.DeliverURL))
	}
	if c.Timeout <= 0 || c.Timeout > bridge.DefaultSendTimeout {
		// Longer, the delivery would be cut (and retried) first.
		errs = append(errs, config.Errorf("timeout", "must be positive and at most %v", bridge.DefaultSendTimeout))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, config.Errorf("max_body_bytes", "must be positive"))
	}
	return errors.Join(errs...)
}

func init() {
	channels.Register(Type, func() config.Section {
		return &Config{Timeout: 10 * time.Second, MaxBodyBytes: 64 << 10}
	}, func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
		return New(name, *sec.(*Config), deps)
	})
}

// Channel is one webhook channel instance.
type Channel struct {
	name   string
	cfg    Config
	svc    *core.Service
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
}

// New builds a channel instance.
func New(name string, cfg Config, deps channels.Deps) (*Channel, error) {
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Channel{
		name:   name,
		cfg:    cfg,
		svc:    deps.Service,
		client: &http.Client{Timeout: cfg.Timeout, CheckRedirect: noRedirects},
		log:    log.With("channel", name),
		now:    time.Now,
	}, nil
}

// noRedirects keeps a delivery where deliver_url says. Following a 301,
// 302 or 303 turns the POST into a GET without its body, and a 2xx from
// there would mark a reply sent that nobody received: such a 3xx is an
// error instead. A 307 or 308 keeps the method and the body, and is
// followed on the same host (http to https included, never back), so a
// receiver that moved to https or added a slash still gets its replies;
// to another host it would hand the signed body to someone else.
func noRedirects(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case len(via) >= 5, req.Response == nil,
		req.Response.StatusCode != http.StatusTemporaryRedirect && req.Response.StatusCode != http.StatusPermanentRedirect,
		req.URL.Hostname() != first.Hostname(),
		first.Scheme == "https" && req.URL.Scheme != "https":
		return http.ErrUseLastResponse
	}
	return nil
}

// Name implements channels.Channel.
func (c *Channel) Name() string { return c.name }

// Type implements channels.Channel.
func (c *Channel) Type() string { return Type }

// Inbound is the body a sender posts to /webhooks/NAME.
type Inbound struct {
	// Type is "message" (the default) or "status".
	Type string `json:"type,omitempty"`

	// For messages:
	ID   string `json:"id"`             // the sender's unique id for the message; repeats are stored once
	From string `json:"from"`           // the customer's id in the sender's system
	Name string `json:"name,omitempty"` // the customer's display name
	Text string `json:"text"`

	// For statuses of messages kefu delivered:
	MessageID int64  `json:"message_id,omitempty"` // kefu's id, as sent in the delivery
	Status    string `json:"status,omitempty"`     // delivered | read | failed
	Reason    string `json:"reason,omitempty"`     // for failed
}

// Limits on inbound fields.
const (
	maxIDLen   = 256
	maxTextLen = 16 << 10
)

// Reply is the answer to an accepted inbound message.
type Reply struct {
	ConversationID int64 `json:"conversation_id"`
	MessageID      int64 `json:"message_id"`
	Seq            int64 `json:"seq"`
	Duplicate      bool  `json:"duplicate"`
}

// ServeHTTP receives the channel's inbound traffic at /webhooks/NAME. It
// answers 200 only after the message is committed.
func (c *Channel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, "use POST")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, http.StatusRequestEntityTooLarge, httpx.CodeTooLarge, fmt.Sprintf("body over %d bytes", c.cfg.MaxBodyBytes))
			return
		}
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "could not read body")
		return
	}
	if err := Verify(c.cfg.Secret, r.Header, body, c.now()); err != nil {
		httpx.Error(w, http.StatusUnauthorized, httpx.CodeUnauthorized, err.Error())
		return
	}
	in, err := ParseInbound(body)
	if err != nil {
		httpx.FromError(w, c.log, err)
		return
	}
	if in.Type == "status" {
		c.serveStatus(w, r, in)
		return
	}
	res, err := c.svc.Ingest(r.Context(), core.Inbound{
		Channel:    c.name,
		ExternalID: in.From,
		Name:       in.Name,
		Message: core.Message{
			Kind:     core.KindText,
			Text:     in.Text,
			DedupKey: core.ProviderKey(c.name, in.ID),
		},
	})
	switch {
	case errors.Is(err, core.ErrInvalid):
		// Not storable as sent (an empty text): retrying would not help.
		httpx.FromError(w, c.log, err)
		return
	case err != nil:
		c.log.Error("ingest failed", "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "message not stored; retry")
		return
	}
	httpx.JSON(w, http.StatusOK, Reply{
		ConversationID: res.Message.ConversationID,
		MessageID:      res.Message.ID,
		Seq:            res.Message.Seq,
		Duplicate:      res.Duplicate,
	})
}

func (c *Channel) serveStatus(w http.ResponseWriter, r *http.Request, in Inbound) {
	m, err := c.svc.Store().Message(r.Context(), in.MessageID)
	if err == nil {
		var conv core.Conversation
		conv, err = c.svc.Store().Conversation(r.Context(), m.ConversationID)
		if err == nil && (conv.Channel != c.name || !m.Outgoing()) {
			err = core.ErrNotFound // not a message this channel delivered
		}
	}
	if err == nil {
		_, err = c.svc.UpdateStatus(r.Context(), core.StatusUpdate{MessageID: in.MessageID, Status: core.MessageStatus(in.Status), Reason: in.Reason})
	}
	switch {
	case errors.Is(err, core.ErrNotFound):
		httpx.Error(w, http.StatusNotFound, httpx.CodeNotFound, "no such message on this channel")
	case err != nil:
		c.log.Error("status update failed", "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "status not stored; retry")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// ParseInbound decodes and checks an inbound body. Its errors are
// *httpx.RequestError (400).
func ParseInbound(body []byte) (Inbound, error) {
	var in Inbound
	if err := httpx.Unmarshal(body, &in); err != nil {
		return in, err
	}
	if err := in.check(); err != nil {
		return in, httpx.BadRequest("%s", err)
	}
	return in, nil
}

// storableID reports whether every store can keep s as it is: valid
// UTF-8 without NUL characters (PostgreSQL's text refuses them).
func storableID(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

func (in *Inbound) check() error {
	switch in.Type {
	case "", "message":
		in.Type = "message"
		switch {
		case in.ID == "" || len(in.ID) > maxIDLen:
			return fmt.Errorf("id: required, at most %d bytes", maxIDLen)
		case in.From == "" || len(in.From) > maxIDLen:
			return fmt.Errorf("from: required, at most %d bytes", maxIDLen)
		case strings.TrimSpace(in.Text) == "":
			return errors.New("text: required")
		case len(in.Text) > maxTextLen:
			return fmt.Errorf("text: longer than %d bytes", maxTextLen)
		case !utf8.ValidString(in.Text) || !utf8.ValidString(in.Name) || !utf8.ValidString(in.From):
			return errors.New("text, name and from must be UTF-8")
		case !storableID(in.ID) || !storableID(in.From):
			return errors.New("id and from must be UTF-8 without NUL characters")
		case len(in.Name) > maxIDLen:
			return fmt.Errorf("name: at most %d bytes", maxIDLen)
		}
	case "status":
		if in.MessageID <= 0 {
			return errors.New("message_id: required")
		}
		switch core.MessageStatus(in.Status) {
		case core.MsgDelivered, core.MsgRead, core.MsgFailed:
		default:
			return errors.New("status: must be delivered, read or failed")
		}
		if len(in.Reason) > maxTextLen || !storableID(in.Reason) {
			return fmt.Errorf("reason: UTF-8 without NUL characters, at most %d bytes", maxTextLen)
		}
	default:
		return fmt.Errorf("type: must be message or status, not %q", in.Type)
	}
	return nil
}

// Outbound is the body kefu posts to deliver_url for each agent reply.
type Outbound struct {
	MessageID      int64     `json:"message_id"`
	ConversationID int64     `json:"conversation_id"`
	Seq            int64     `json:"seq"`
	To             string    `json:"to"` // the customer's id, as given in "from"
	Kind           string    `json:"kind"`
	Text           string    `json:"text"`
	SenderKind     string    `json:"sender_kind"` // agent | bot
	CreatedAt      time.Time `json:"created_at"`
}

// DeliveryReply is what deliver_url may answer: its own id for the message.
type DeliveryReply struct {
	ID string `json:"id"`
}

// Send implements bridge.Sender: it posts one reply to deliver_url.
func (c *Channel) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	m := out.Message
	if m == nil || out.Conversation == nil {
		return bridge.SendResult{}, bridge.Permanent("nothing to deliver", errors.New("webhook: outbox entry without a message"))
	}
	if m.Kind != core.KindText {
		return bridge.SendResult{}, bridge.Permanent("the webhook channel sends text only", fmt.Errorf("webhook: cannot send %s", m.Kind))
	}
	body, err := json.Marshal(Outbound{
		MessageID: m.ID, ConversationID: m.ConversationID, Seq: m.Seq, To: out.Conversation.ExternalID,
		Kind: string(m.Kind), Text: m.Text, SenderKind: string(m.SenderKind), CreatedAt: m.CreatedAt,
	})
	if err != nil {
		return bridge.SendResult{}, bridge.Permanent("cannot encode", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.DeliverURL, bytes.NewReader(body))
	if err != nil {
		return bridge.SendResult{}, bridge.Permanent("bad deliver_url", err)
	}
	req.Header.Set("Content-Type", "application/json")
	Sign(c.cfg.Secret, req.Header, body, c.now())
	resp, err := c.client.Do(req)
	if err != nil {
		return bridge.SendResult{}, fmt.Errorf("webhook: deliver: %w", err)
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	switch {
	case resp.StatusCode/100 == 2:
		var dr DeliveryReply
		_ = json.Unmarshal(respBody, &dr) // the id is optional
		if len(dr.ID) > maxIDLen || !storableID(dr.ID) {
			// Not an id any store keeps: the reply was delivered all the
			// same, and recording it must not fail.
			c.log.Warn("webhook: deliver_url answered an id that cannot be stored; ignored", "message", m.ID)
			dr.ID = ""
		}
		return bridge.SendResult{ExternalID: dr.ID}, nil
	case resp.StatusCode/100 == 3:
		reason := fmt.Sprintf("deliver_url redirects (HTTP %d)", resp.StatusCode)
		if loc := resp.Header.Get("Location"); loc != "" && utf8.ValidString(loc) {
			reason += " to " + truncate(loc, 200)
		}
		return bridge.SendResult{}, bridge.Permanent(reason+"; set deliver_url to the final address", fmt.Errorf("webhook: deliver: HTTP %d", resp.StatusCode))
	case resp.StatusCode == http.StatusTooManyRequests:
		return bridge.SendResult{}, bridge.RetryAfter(retryAfter(resp.Header.Get("Retry-After"), c.now()), fmt.Errorf("webhook: deliver: HTTP 429"))
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooEarly:
		return bridge.SendResult{}, fmt.Errorf("webhook: deliver: HTTP %d", resp.StatusCode)
	default:
		reason := fmt.Sprintf("rejected by the receiver (HTTP %d)", resp.StatusCode)
		if s := strings.TrimSpace(string(respBody)); s != "" && utf8.ValidString(s) {
			reason += ": " + truncate(s, 200)
		}
		return bridge.SendResult{}, bridge.Permanent(reason, fmt.Errorf("webhook: deliver: HTTP %d", resp.StatusCode))
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 1 s when absent.
func retryAfter(v string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return time.Second
}

// Sign sets the timestamp and signature headers for body.
func Sign(secret string, h http.Header, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, "sha256="+hex.EncodeToString(mac(secret, ts, body)))
}

// Verify checks a signed request: the signature over timestamp and body, in
// constant time, and a timestamp within MaxSkew of now.
func Verify(secret string, h http.Header, body []byte, now time.Time) error {
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("missing or malformed " + HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return errors.New("stale timestamp")
	}
	sig, ok := strings.CutPrefix(h.Get(HeaderSignature), "sha256=")
	got, err := hex.DecodeString(sig)
	if !ok || err != nil {
		return errors.New("missing or malformed " + HeaderSignature)
	}
	if !hmac.Equal(got, mac(secret, ts, body)) {
		return errors.New("signature mismatch")
	}
	return nil
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

var (
	_ channels.Channel = (*Channel)(nil)
	_ http.Handler     = (*Channel)(nil)
	_ bridge.Sender    = (*Channel)(nil)
)
