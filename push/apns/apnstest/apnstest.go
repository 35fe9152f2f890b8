// Package apnstest is a fake APNs server for tests: HTTP/2 over TLS, like
// Apple's. It checks what the real service checks — the request path
// (/3/device/<hex token>), the apns-topic and apns-push-type headers, and the
// provider token (an ES256 JWT whose signature must verify against the
// configured key's public key, with the configured key id and team id) —
// records every request, and answers as a test tells it to: 200 by default,
// or any status and reason (410 Unregistered, 400 BadDeviceToken, 429
// TooManyRequests, 500 InternalServerError…) for the next requests to a token.
package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config is what the server accepts.
type Config struct {
	// Key is the provider key whose public half verifies the JWT. Required.
	Key *ecdsa.PublicKey
	// KeyID and TeamID are the JWT's expected kid and iss.
	KeyID, TeamID string
	// Topics are the accepted apns-topic values; empty accepts any.
	Topics []string
}

// Answer is a response the server gives.
type Answer struct {
	Status int    // HTTP status
	Reason string // APNs reason, e.g. "Unregistered"
	// Timestamp, for a 410, is when APNs last confirmed the token invalid
	// (sent in milliseconds since the epoch); zero leaves it out.
	Timestamp time.Time
}

// Common answers.
var (
	Unregistered   = Answer{Status: http.StatusGone, Reason: "Unregistered"}
	BadDeviceToken = Answer{Status: http.StatusBadRequest, Reason: "BadDeviceToken"}
	TooMany        = Answer{Status: http.StatusTooManyRequests, Reason: "TooManyRequests"}
	InternalError  = Answer{Status: http.StatusInternalServerError, Reason: "InternalServerError"}
	ExpiredKey     = Answer{Status: http.StatusForbidden, Reason: "ExpiredProviderToken"}
)

// Request is one push the server received.
type Request struct {
	Token      string // from the path
	Topic      string // apns-topic
	PushType   string // apns-push-type
	Priority   string // apns-priority
	CollapseID string // apns-collapse-id
	// Payload is the decoded JSON body; Body is the body as received.
	Payload Payload
	Body    []byte
	// Answer is what the server answered.
	Answer Answer
	// Problem says what was wrong with the request, when the server
	// refused it for its own checks (not for a scripted answer).
	Problem string
}

// Payload is the part of the body kefu sends.
type Payload struct {
	APS struct {
		Alert struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"alert"`
		Badge    *int   `json:"badge"`
		Sound    string `json:"sound"`
		ThreadID string `json:"thread-id"`
	} `json:"aps"`
	ConversationID int64 `json:"conversation_id"`
	Seq            int64 `json:"seq"`
	MessageID      int64 `json:"message_id"`
}

// Server is the fake APNs. Create it with New and stop it with Close.
type Server struct {
	*httptest.Server
	cfg Config

	mu       sync.Mutex
	scripted map[string][]Answer // per token: the next answers, in order
	requests []Request
	received chan Request
}

// New starts a fake APNs server over HTTP/2 and TLS. Point the client's
// host at s.URL and its HTTP client at s.Client().
func New(cfg Config) *Server {
	if cfg.Key == nil {
		panic("apnstest.New: Config.Key is nil")
	}
	s := &Server{cfg: cfg, scripted: map[string][]Answer{}, received: make(chan Request, 1024)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.EnableHTTP2 = true
	s.StartTLS()
	return s
}

// Script makes the next requests to token answer with answers, in order;
// after them the server answers 200 again.
func (s *Server) Script(token string, answers ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripted[token] = append(s.scripted[token], answers...)
}

// Requests returns every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Received delivers each request as it is answered (buffered; a test that
// does not read it loses nothing but the channel's copies beyond 1024).
func (s *Server) Received() <-chan Request { return s.received }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{
		Topic: r.Header.Get("apns-topic"), PushType: r.Header.Get("apns-push-type"),
		Priority: r.Header.Get("apns-priority"), CollapseID: r.Header.Get("apns-collapse-id"),
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	if err == nil {
		req.Body = body
		err = json.Unmarshal(body, &req.Payload)
	}
	tok, pathOK := strings.CutPrefix(r.URL.Path, "/3/device/")
	req.Token = tok
	switch {
	case r.ProtoMajor != 2:
		req.Answer, req.Problem = Answer{Status: http.StatusBadRequest, Reason: "BadPath"}, "not HTTP/2: "+r.Proto
	case r.Method != http.MethodPost:
		req.Answer, req.Problem = Answer{Status: http.StatusMethodNotAllowed, Reason: "MethodNotAllowed"}, "method "+r.Method
	case !pathOK || !isHex(tok):
		req.Answer, req.Problem = Answer{Status: http.StatusNotFound, Reason: "BadPath"}, "path "+r.URL.Path
	case req.Topic == "":
		req.Answer, req.Problem = Answer{Status: http.StatusBadRequest, Reason: "MissingTopic"}, "no apns-topic"
	case len(s.cfg.Topics) > 0 && !slices.Contains(s.cfg.Topics, req.Topic):
		req.Answer, req.Problem = Answer{Status: http.StatusBadRequest, Reason: "TopicDisallowed"}, "topic "+req.Topic
	case req.PushType != "alert" && req.PushType != "background":
		req.Answer, req.Problem = Answer{Status: http.StatusBadRequest, Reason: "InvalidPushType"}, "apns-push-type "+req.PushType
	case err != nil:
		req.Answer, req.Problem = Answer{Status: http.StatusBadRequest, Reason: "PayloadEmpty"}, "body: "+err.Error()
	default:
		if problem := s.checkJWT(r.Header.Get("authorization")); problem != "" {
			req.Answer, req.Problem = Answer{Status: http.StatusForbidden, Reason: "InvalidProviderToken"}, problem
			break
		}
		req.Answer = Answer{Status: http.StatusOK}
		s.mu.Lock()
		if q := s.scripted[tok]; len(q) > 0 {
			req.Answer, s.scripted[tok] = q[0], q[1:]
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	select {
	case s.received <- req:
	default:
	}
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000001")
	if req.Answer.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(req.Answer.Status)
	answer := map[string]any{"reason": req.Answer.Reason}
	if !req.Answer.Timestamp.IsZero() {
		answer["timestamp"] = req.Answer.Timestamp.UnixMilli()
	}
	_ = json.NewEncoder(w).Encode(answer)
}

// checkJWT verifies a provider token; it returns what is wrong, or "".
func (s *Server) checkJWT(auth string) string {
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return "authorization is not \"bearer <jwt>\""
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "the JWT does not have three parts"
	}
	var head struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	if err := decodePart(parts[0], &head); err != nil {
		return "JWT header: " + err.Error()
	}
	if err := decodePart(parts[1], &claims); err != nil {
		return "JWT claims: " + err.Error()
	}
	switch {
	case head.Alg != "ES256":
		return "JWT alg " + head.Alg
	case head.Kid != s.cfg.KeyID:
		return "JWT kid " + head.Kid
	case claims.Iss != s.cfg.TeamID:
		return "JWT iss " + claims.Iss
	case claims.Iat <= 0:
		return "JWT without iat"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return "JWT signature is not 64 bytes of base64url"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(s.cfg.Key, digest[:], r, ss) {
		return "JWT signature does not verify with the configured key"
	}
	return ""
}

func decodePart(p string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return s != "" && err == nil
}

// NewKey generates a provider key as Apple hands it out: an EC P-256 private
// key in a PKCS #8 PEM block (the content of an AuthKey_KEYID.p8 file).
func NewKey() (pemBytes []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("apnstest: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key, nil
}
