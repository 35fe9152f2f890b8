package whatsapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// HeaderSignature carries Meta's signature of a webhook body:
// "sha256=" + hex HMAC-SHA256(app secret, raw body).
const HeaderSignature = "X-Hub-Signature-256"

// maxChallenge bounds the handshake's hub.challenge that kefu echoes.
const maxChallenge = 1024

// Signature errors: a missing or malformed header (401) and a signature that
// does not match (403).
var (
	ErrNoSignature  = errors.New("missing or malformed " + HeaderSignature)
	ErrBadSignature = errors.New(HeaderSignature + " does not match the body")
)

// Sign returns the X-Hub-Signature-256 value Meta sends with body.
func Sign(appSecret string, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(appSecret, body))
}

// Verify checks a webhook body against its X-Hub-Signature-256 value, in
// constant time. It returns ErrNoSignature or ErrBadSignature.
func Verify(appSecret, header string, body []byte) error {
	sig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	got, err := hex.DecodeString(sig)
	if !ok || err != nil || len(got) != sha256.Size {
		return ErrNoSignature
	}
	if !hmac.Equal(got, mac(appSecret, body)) {
		return ErrBadSignature
	}
	return nil
}

func mac(secret string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// ServeHTTP serves /webhooks/NAME: Meta's verification handshake (GET) and
// its notifications (POST).
func (c *Channel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		c.handshake(w, r)
	case http.MethodPost:
		c.receive(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, "use GET (verification) or POST (notifications)")
	}
}

// handshake answers Meta's subscription check: 200 with the raw
// hub.challenge when hub.verify_token is the configured one, 403 otherwise.
func (c *Channel) handshake(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	challenge := q.Get("hub.challenge")
	if q.Get("hub.mode") != "subscribe" || !sameSecret(q.Get("hub.verify_token"), c.cfg.VerifyToken) ||
		challenge == "" || len(challenge) > maxChallenge {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "verification failed: check hub.mode and verify_token")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, challenge)
}

// sameSecret compares two secrets in time that depends on neither.
func sameSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return hmac.Equal(ha[:], hb[:]) && b != ""
}

// receive handles a notification: it verifies the signature before reading
// the JSON, stores every message and status in it, and answers 200 only when
// all of it is committed (503 otherwise, so that Meta retries).
func (c *Channel) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, http.StatusRequestEntityTooLarge, httpx.CodeTooLarge, fmt.Sprintf("body over %d bytes", MaxBodyBytes))
			return
		}
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "could not read the body")
		return
	}
	if err := Verify(c.cfg.AppSecret, r.Header.Get(HeaderSignature), body); err != nil {
		status, code := http.StatusUnauthorized, httpx.CodeUnauthorized
		if errors.Is(err, ErrBadSignature) {
			status, code = http.StatusForbidden, httpx.CodeForbidden
		}
		c.log.Warn("whatsapp: webhook refused", "err", err)
		httpx.Error(w, status, code, err.Error())
		return
	}
	n, err := ParseNotification(body)
	if err != nil {
		httpx.FromError(w, c.log, err)
		return
	}
	b := plan(n, c.cfg.PhoneNumberID)
	for _, e := range b.errors {
		c.log.Warn("whatsapp: Meta reported an error", "code", e.Code, "title", e.Title, "details", detailsOf(e))
	}
	if b.skipped > 0 {
		c.log.Debug("whatsapp: webhook items skipped (malformed, or for another number)", "count", b.skipped)
	}
	if err := c.apply(r.Context(), b); err != nil {
		c.log.Error("whatsapp: webhook not fully stored; Meta will retry", "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "not stored; retry")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// apply stores a batch. Messages go in order; at the first that fails the
// rest wait for Meta's retry, so that a conversation's order holds (those
// already stored are then recognised by their wamid). Statuses are applied
// whatever happens, as their order does not matter.
func (c *Channel) apply(ctx context.Context, b batch) error {
	var errs []error
	for _, in := range b.messages {
		if err := c.ingest(ctx, in); err != nil {
			errs = append(errs, fmt.Errorf("message %s: %w", in.wamid, err))
			break
		}
	}
	for _, st := range b.statuses {
		if err := c.applyStatus(ctx, st); err != nil {
			errs = append(errs, fmt.Errorf("status %s of %s: %w", st.status, st.wamid, err))
		}
	}
	return errors.Join(errs...)
}

// ingest stores one customer message, with its media, once.
func (c *Channel) ingest(ctx context.Context, in inbound) error {
	if _, done := c.seen.get(in.wamid); done {
		return nil // a retried batch; stored already
	}
	ext, err := c.identity(ctx, in.waID, in.userID)
	if err != nil {
		return err
	}
	msg := core.Message{Kind: core.KindText, Text: in.text, DedupKey: core.ProviderKey(c.name, in.wamid)}
	if in.reactTo != "" && in.emoji != "" {
		msg.Text = renderReaction(in.emoji, c.quote(ctx, in.reactTo))
	}
	if in.media != nil {
		m, err := c.fetchMedia(ctx, in.media)
		switch {
		case err == nil:
			msg.Media = &m
			msg.Kind = core.KindFile
			if strings.HasPrefix(m.Type, "image/") {
				msg.Kind = core.KindImage
			}
		case isPermanentMedia(err):
			c.log.Warn("whatsapp: media not kept", "wamid", in.wamid, "type", in.typ, "err", err)
			msg.Text = joinNonEmpty("\n", fmt.Sprintf("[%s not kept: %s]", in.mediaWhat, mediaProblem(err)), in.text)
		default:
			return err
		}
	}
	res, err := c.svc.Ingest(ctx, core.Inbound{Channel: c.name, ExternalID: ext, Name: in.name, Message: msg})
	// The file goes only when no message can point at it: a repeat, or a
	// message refused before any write. After another error the write may
	// still have committed (core.Store), and a file too many is better
	// than a stored message whose file is gone.
	if msg.Media != nil && (res.Duplicate || errors.Is(err, core.ErrInvalid)) {
		c.dropMedia(ctx, msg.Media.Key)
	}
	if errors.Is(err, core.ErrInvalid) {
		// Nothing storable: Meta's retries would not change that, and
		// the messages after it in the POST must not wait behind it.
		c.log.Warn("whatsapp: message not storable; ignored", "wamid", in.wamid, "err", err)
		err = nil
	}
	if err != nil {
		return err
	}
	c.seen.put(in.wamid, struct{}{})
	return nil
}

// quote returns the start of the message kefu sent that a reaction is
// about, or "" when it is not one kefu sent.
func (c *Channel) quote(ctx context.Context, wamid string) string {
	m, err := c.svc.Store().MessageByExternalID(ctx, c.name, wamid)
	if err != nil {
		return ""
	}
	switch m.Kind {
	case core.KindImage:
		return "[image]"
	case core.KindFile:
		return "[file]"
	case core.KindTemplate:
		return "[template " + m.Text + "]"
	}
	s := strings.Join(strings.Fields(m.Text), " ")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:60]) + "…"
	}
	return s
}

func detailsOf(e EventError) string {
	if e.ErrorData != nil {
		return e.ErrorData.Details
	}
	return e.Message
}
