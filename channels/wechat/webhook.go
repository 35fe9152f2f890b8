package wechat

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/httpx"
)

// Errors of callback verification. A callback that fails is answered 403.
var (
	ErrBadSignature = errors.New("signature does not match")
	ErrBadMsgSig    = errors.New("msg_signature does not match the encrypted message")
	ErrReplayed     = errors.New("this signed query came before with another body: refused as a replay")
)

// ServeHTTP serves /webhooks/NAME: the URL check WeChat makes when the
// server configuration is saved (GET) and the callbacks (POST).
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

// VerifyQuery checks a callback's query: a timestamp within wxapi.MaxSkew
// of now and signature = SHA-1 of the sorted (token, timestamp, nonce),
// compared in constant time. WeChat sends it in every mode.
func (c *Channel) VerifyQuery(q url.Values) error {
	if err := wxapi.CheckTimestamp(q.Get("timestamp"), c.now()); err != nil {
		return err
	}
	if !wxapi.VerifySignature(q.Get("signature"), c.cfg.Token, q.Get("timestamp"), q.Get("nonce")) {
		return ErrBadSignature
	}
	return nil
}

// verifyURL answers WeChat's URL check: echostr, when the signature holds.
func (c *Channel) verifyURL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := c.VerifyQuery(q); err != nil {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, "URL check failed: "+err.Error())
		return
	}
	echo := q.Get("echostr")
	if echo == "" || len(echo) > maxEchoStr {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "echostr: missing or too long")
		return
	}
	// The URL check's query is signed as a callback's is: remembered, it
	// cannot be posted again with a body of someone else's making. (A NUL
	// keeps the marker from ever equalling a posted body.)
	if !c.replays.Check(q.Get("timestamp"), q.Get("nonce"), q.Get("signature"), []byte("\x00GET\x00"+echo), false, c.now()) {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, ErrReplayed.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, echo)
}

// receive handles one callback. Everything is checked before the message
// is parsed, the query's signature before the body is read, and nothing is
// stored for a callback that fails.
func (c *Channel) receive(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := c.VerifyQuery(q); err != nil {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, err.Error())
		return
	}
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
	plain, status, err := c.open(q, body)
	if err != nil {
		if status == http.StatusForbidden {
			httpx.Error(w, status, httpx.CodeForbidden, err.Error())
		} else {
			httpx.Error(w, status, httpx.CodeBadRequest, err.Error())
		}
		return
	}
	// open checked an encrypted callback's msg_signature, which covers its
	// body; a plaintext one has only the query's signature.
	sealed := q.Get("encrypt_type") == "aes"
	if !c.replays.Check(q.Get("timestamp"), q.Get("nonce"), q.Get("signature"), body, sealed, c.now()) {
		httpx.Error(w, http.StatusForbidden, httpx.CodeForbidden, ErrReplayed.Error())
		return
	}
	msg, err := ParseMessage(plain)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, err.Error())
		return
	}
	in, ok := toInbound(msg)
	if !ok {
		c.log.Debug("wechat: callback ignored", "type", msg.MsgType, "event", msg.Event)
		success(w)
		return
	}
	if err := c.accept(r.Context(), in); err != nil {
		c.log.Error("wechat: callback not stored; WeChat will retry", "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "message not stored; retry")
		return
	}
	success(w)
}

// open returns the message XML of a callback whose query is verified: the
// body itself in plaintext mode; in compatible and safe mode (encrypt_type
// aes), the Encrypt element after its msg_signature is checked, decrypted
// with the EncodingAESKey and checked to be sealed for this AppID. The
// status says how to answer an error.
func (c *Channel) open(q url.Values, body []byte) ([]byte, int, error) {
	switch q.Get("encrypt_type") {
	case "", "raw":
		return body, 0, nil
	case "aes":
	default:
		return nil, http.StatusBadRequest, errors.New("encrypt_type: must be raw or aes")
	}
	if c.cfg.EncodingAESKey == "" {
		c.log.Error("wechat: a callback in safe or compatible mode arrived, but encoding_aes_key is not configured")
		return nil, http.StatusBadRequest, errors.New("encrypted callback, but this channel has no encoding_aes_key")
	}
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	if !wxapi.VerifySignature(q.Get("msg_signature"), c.cfg.Token, q.Get("timestamp"), q.Get("nonce"), env.Encrypt) {
		return nil, http.StatusForbidden, ErrBadMsgSig
	}
	plain, err := wxapi.Decrypt(c.cfg.AppID, env.Encrypt, c.cfg.EncodingAESKey)
	if err != nil {
		// The signature held, so the sender knows the token: the key or the
		// AppID in kefu.yaml does not match the account.
		c.log.Error("wechat: could not decrypt a signed callback; check encoding_aes_key and app_id", "err", err)
		return nil, http.StatusForbidden, errors.New("could not decrypt the message")
	}
	return plain, 0, nil
}

// success is the answer WeChat expects when there is no passive reply (in
// every mode: it is not encrypted in safe mode).
func success(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "success")
}
