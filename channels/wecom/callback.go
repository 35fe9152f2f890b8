package wecom

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/httpx"
)

// ErrBadSignature: a callback's msg_signature does not match.
var ErrBadSignature = errors.New("msg_signature does not match")

// Envelope is the outer XML of a callback: the CorpID, the app's AgentID
// and the encrypted message.
type Envelope struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	AgentID    string   `xml:"AgentID"`
	Encrypt    string   `xml:"Encrypt"`
}

// ParseEnvelope reads a callback's outer XML.
func ParseEnvelope(b []byte) (Envelope, error) {
	var env Envelope
	if err := xml.Unmarshal(b, &env); err != nil {
		return env, fmt.Errorf("malformed callback XML: %w", err)
	}
	if env.Encrypt == "" {
		return env, errors.New("callback has no Encrypt element")
	}
	return env, nil
}

// Message is a decrypted app callback: a member's message to the app, or
// an event. (The library's MixMessage has no AgentID.)
type Message struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string   `xml:"ToUserName"`   // the CorpID
	FromUserName string   `xml:"FromUserName"` // the member's userid
	CreateTime   int64    `xml:"CreateTime"`
	MsgType      string   `xml:"MsgType"` // text, image, voice, video, location, link, event
	Content      string   `xml:"Content"`
	MsgID        string   `xml:"MsgId"` // a 64-bit number; kept as text
	AgentID      int64    `xml:"AgentID"`
	PicURL       string   `xml:"PicUrl"`
	MediaID      string   `xml:"MediaId"`
	Event        string   `xml:"Event"`
}

// Limits on callback fields.
const (
	maxUserIDLen  = 64
	maxContentLen = 16 << 10
)

// ParseMessage reads a decrypted callback and checks what kefu relies on.
func ParseMessage(b []byte) (Message, error) {
	var m Message
	if err := xml.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("malformed message XML: %w", err)
	}
	switch {
	case m.FromUserName == "" || len(m.FromUserName) > maxUserIDLen || !utf8.ValidString(m.FromUserName) || strings.ContainsAny(m.FromUserName, "\x00\r\n"):
		return m, errors.New("FromUserName: missing or not a userid")
	case m.MsgType == "":
		return m, errors.New("MsgType: missing")
	case len(m.MsgID) > 32:
		return m, errors.New("MsgId: too long")
	case len(m.Content) > maxContentLen:
		return m, errors.New("Content: too long")
	}
	m.Content = strings.ReplaceAll(strings.ToValidUTF8(m.Content, "\uFFFD"), "\x00", "")
	return m, nil
}

// ServeHTTP serves /webhooks/NAME: the URL check Work WeChat makes when the
// app's API callback is saved (GET) and the callbacks (POST).
func (c *Channel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		c.verifyURL(w, r)
	case http.MethodPost:
		c.receive(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, "use GET (URL check) or POST (callbacks)")
	}
}

// Verify checks a callback: a timestamp within wxapi.MaxSkew of now and
// msg_signature = SHA-1 of the sorted (token, timestamp, nonce, encrypted),
// compared in constant time.
func (c *Channel) Verify(q url.Values, encrypted string) error {
	if err := wxapi.CheckTimestamp(q.Get("timestamp"), c.now()); err != nil {
		return err
	}
	if !wxapi.VerifySignature(q.Get("msg_signature"), c.cfg.Token, q.Get("timestamp"), q.Get("nonce"), encrypted) {
		return ErrBadSignature
	}
	return nil
}

// verifyURL answers the URL check: the decrypted echostr, when the
// signature holds and it was sealed for this CorpID.
func (c *Channel) verifyURL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	echo := q.Get("echostr")
	if echo == "" || len(echo) > maxEchoStr {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "echostr: missing or too long")
		return
	}
	if err := c.Verify(q, echo); err != nil {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "URL check failed: "+err.Error())
		return
	}
	plain, err := wxapi.Decrypt(c.cfg.CorpID, echo, c.cfg.EncodingAESKey)
	if err != nil {
		c.log.Error("wecom: could not decrypt a signed URL check; check encoding_aes_key and corp_id", "err", err)
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "URL check failed: could not decrypt echostr")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(plain) // as is: no quotes, no BOM, no newline
}

// receive handles one callback. Nothing is stored for one that fails its
// checks; an accepted one is answered 200 with an empty body once what it
// asked for is committed (Work WeChat retries a callback it gets no answer
// to within 5 seconds). A retry of a callback this node has handled, or is
// handling, is not carried out again (see callbacks).
func (c *Channel) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, http.StatusRequestEntityTooLarge, httpx.CodeTooLarge, fmt.Sprintf("body over %d bytes", MaxBodyBytes))
			return
		}
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "could not read body")
		return
	}
	q := r.URL.Query()
	if err := wxapi.CheckTimestamp(q.Get("timestamp"), c.now()); err != nil {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, err.Error())
		return
	}
	env, err := ParseEnvelope(body)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, err.Error())
		return
	}
	if err := c.Verify(q, env.Encrypt); err != nil {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, err.Error())
		return
	}
	plain, err := wxapi.Decrypt(c.cfg.CorpID, env.Encrypt, c.cfg.EncodingAESKey)
	if err != nil {
		c.log.Error("wecom: could not decrypt a signed callback; check encoding_aes_key and corp_id", "err", err)
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "could not decrypt the message")
		return
	}
	msg, err := ParseMessage(plain)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, err.Error())
		return
	}
	if msg.AgentID != 0 && msg.AgentID != c.cfg.AgentID {
		c.log.Warn("wecom: callback for another app ignored", "agent_id", msg.AgentID)
		w.WriteHeader(http.StatusOK)
		return
	}
	err = c.handled.do(r.Context(), msg.MsgID, c.now(), func() error {
		// Work WeChat hangs up after 5 s and sends the callback again: the
		// handling goes on to its end, for the retry to find it done,
		// rather than stopping halfway through a command.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), handleBudget)
		defer cancel()
		// And once in the cluster: the retry may reach another node.
		return c.clusterOnce(ctx, msg.MsgID, func() error { return c.handle(ctx, msg) })
	})
	if err != nil && r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
		// Work WeChat hung up (a retry waiting for the first handling,
		// which goes on): nobody reads this answer.
		c.log.Info("wecom: Work WeChat stopped waiting for a callback's answer", "msgid", msg.MsgID, "err", err)
		return
	}
	if errors.Is(err, errClaimBusy) {
		// A retry on another node than the one still running it: the
		// next retry finds it done.
		c.log.Info("wecom: callback still being handled on another node; Work WeChat will ask again", "msgid", msg.MsgID)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "being handled; retry")
		return
	}
	if err != nil {
		c.log.Error("wecom: callback not handled; Work WeChat will retry", "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "not handled; retry")
		return
	}
	w.WriteHeader(http.StatusOK)
}

var _ http.Handler = (*Channel)(nil)
