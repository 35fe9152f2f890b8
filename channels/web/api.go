package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// The REST API under /api/v1, documented in docs/api.md. Every request but
// login carries an agent's bearer token; every action goes through
// core.Service, so the rules of the core hold here as in every channel.
//
// Files: api.go (routing, authentication, decoding, shared views),
// api_auth.go (login, logout, me, passwords), api_throttle.go (login
// throttling), api_conversations.go (conversations and messages),
// api_agents.go (agents), api_media.go (uploads and agents' downloads),
// devices.go (push device tokens).

const (
	// apiPrefix is where the API lives.
	apiPrefix = "/api/v1/"
	// apiMaxSmallBody caps every request body but a message's, whose cap is
	// max_frame_bytes.
	apiMaxSmallBody = 16 << 10
	// apiSweepEvery is how often expired sessions and unsent uploads are
	// deleted.
	apiSweepEvery = time.Hour
)

// api is the REST half of the web channel.
type api struct {
	c        *Channel
	svc      *core.Service
	store    core.Store
	log      *slog.Logger
	trusted  []netip.Prefix
	throttle *loginThrottle
	mux      *http.ServeMux // the /api/v1 routes
	// templates lists a customer channel instance's message templates
	// (Channel.UseTemplates); nil: none anywhere.
	templates atomic.Pointer[func(channel string) []string]
}

func newAPI(c *Channel) (*api, error) {
	l := c.cfg.Limits
	a := &api{
		c: c, svc: c.svc, store: c.store, log: c.log, trusted: c.deps.TrustedProxies,
		throttle: newLoginThrottle(l.LoginFailuresPerAccount, l.LoginFailuresPerIP, l.LoginWindow),
		mux:      http.NewServeMux(),
	}
	a.routes()
	return a, nil
}

// routes registers every endpoint. The list is docs/api.md's table of
// contents.
func (a *api) routes() {
	// Every endpoint but the two lists (which check their own filters)
	// refuses query parameters: "?note=true" on a reply must not send a
	// note to the customer.
	a.mux.HandleFunc("POST /api/v1/auth/login", a.login)
	a.handle("POST /api/v1/auth/logout", apiNoQuery(a.logout))

	a.handle("GET /api/v1/me", apiNoQuery(a.getMe))
	a.handle("PATCH /api/v1/me", apiNoQuery(a.patchMe))
	a.handle("POST /api/v1/me/password", apiNoQuery(a.changePassword))

	a.handle("GET /api/v1/conversations", a.listConversations)
	a.handle("GET /api/v1/conversations/{id}", apiNoQuery(a.getConversation))
	a.handle("GET /api/v1/conversations/{id}/messages", a.listMessages)
	a.handle("POST /api/v1/conversations/{id}/messages", apiNoQuery(a.postReply))
	a.handle("POST /api/v1/conversations/{id}/notes", apiNoQuery(a.postNote))
	a.handle("POST /api/v1/conversations/{id}/take", apiNoQuery(a.take))
	a.handle("POST /api/v1/conversations/{id}/assign", apiNoQuery(a.assign))
	a.handle("POST /api/v1/conversations/{id}/transfer", apiNoQuery(a.transfer))
	a.handle("POST /api/v1/conversations/{id}/close", apiNoQuery(a.closeConversation))
	a.handle("POST /api/v1/conversations/{id}/reopen", apiNoQuery(a.reopenConversation))
	a.handle("POST /api/v1/conversations/{id}/read", apiNoQuery(a.markRead))
	a.handle("POST /api/v1/messages/{id}/resend", apiNoQuery(a.resend))
	a.handle("GET /api/v1/conversations/{id}/templates", apiNoQuery(a.listTemplates))

	a.handle("POST /api/v1/uploads", apiNoQuery(a.upload))
	a.handle("GET /api/v1/media/{key}", apiNoQuery(a.getMedia))
	a.handle("GET /api/v1/media/{key}/preview", apiNoQuery(a.getMediaPreview))

	a.handle("POST /api/v1/devices", apiNoQuery(a.postDevice))
	a.handle("GET /api/v1/devices", apiNoQuery(a.listDevices))
	a.handle("DELETE /api/v1/devices/{token}", apiNoQuery(a.deleteDevice))

	a.handle("GET /api/v1/agents", apiNoQuery(a.listAgents))
	a.handle("POST /api/v1/agents", apiNoQuery(apiAdminOnly(a.createAgent)))
	a.handle("PATCH /api/v1/agents/{id}", apiNoQuery(apiAdminOnly(a.patchAgent)))
	a.handle("POST /api/v1/agents/{id}/password", apiNoQuery(apiAdminOnly(a.resetPassword)))
}

func (a *api) mount(mux *http.ServeMux) { mux.Handle(apiPrefix, a) }

// ServeHTTP routes an API request. A path no route has, or a method a path
// does not allow, is answered in the API's JSON error shape (the ServeMux
// would answer in plain text), with Allow on 405.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	h, _ := a.mux.Handler(r)
	rec := &apiHeaderRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch {
	case rec.status == http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.header.Get("Allow"))
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, r.Method+" is not allowed here; allowed: "+rec.header.Get("Allow"))
	case rec.status >= 300 && rec.status < 400 && rec.header.Get("Location") != "":
		http.Redirect(w, r, rec.header.Get("Location"), rec.status) // a cleaned path
	default:
		httpx.Error(w, http.StatusNotFound, httpx.CodeNotFound, "no such endpoint: "+r.URL.Path)
	}
}

// apiHeaderRecorder keeps the status and headers the ServeMux's own 404, 405
// and redirect handlers write, and drops their plain-text bodies.
type apiHeaderRecorder struct {
	header http.Header
	status int
}

func (h *apiHeaderRecorder) Header() http.Header { return h.header }
func (h *apiHeaderRecorder) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *apiHeaderRecorder) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return len(b), nil
}

// run deletes expired sessions and unsent uploads (uploads.go) and forgets
// old login failures, once at the start and then every apiSweepEvery,
// until ctx is done.
func (a *api) run(ctx context.Context) error {
	t := time.NewTicker(apiSweepEvery)
	defer t.Stop()
	for {
		a.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *api) sweep(ctx context.Context) {
	a.throttle.sweep()
	n, err := a.store.DeleteExpiredSessions(ctx, a.c.now())
	switch {
	case err != nil && ctx.Err() == nil:
		a.log.Warn("deleting expired sessions failed", "err", err)
	case n > 0:
		a.log.Debug("expired sessions deleted", "n", n)
	}
	n, err = a.c.sweepUploads(ctx, a.c.now())
	if err != nil && ctx.Err() == nil {
		a.log.Warn("deleting unsent uploads failed", "err", err)
	}
	if n > 0 {
		a.log.Info("unsent uploads deleted", "n", n)
	}
}

// apiHandler serves an authenticated request; me is the agent whose token
// it carries. A returned error is answered with httpx.FromError.
type apiHandler func(w http.ResponseWriter, r *http.Request, me core.Agent) error

// handle registers an endpoint that needs an agent's bearer token: the one
// place that authenticates (401 for a missing, malformed, expired or
// revoked token, or a deactivated agent) and puts the agent and the session
// in the request's context.
func (a *api) handle(pattern string, h apiHandler) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		me, sess, err := a.c.authenticateAgent(r.Context(), bearerToken(r))
		if err != nil {
			a.fail(w, err)
			return
		}
		r = r.WithContext(withAPISession(withAgent(r.Context(), me), sess))
		if err := h(w, r, me); err != nil {
			a.fail(w, err)
		}
	})
}

// fail answers err in the JSON error shape.
func (a *api) fail(w http.ResponseWriter, err error) {
	if status, _ := httpx.Status(err); status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kefu"`)
	}
	httpx.FromError(w, a.log, err)
}

// apiNoQuery refuses any query parameter, for endpoints that take none:
// a misspelt filter must not silently list everything (docs/api.md).
func apiNoQuery(h apiHandler) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, me core.Agent) error {
		if err := noQuery(r); err != nil {
			return err
		}
		return h(w, r, me)
	}
}

// noQuery is apiNoQuery's check.
func noQuery(r *http.Request) error {
	if err := checkQuery(r.URL.Query()); err != nil {
		return httpx.BadRequest("%s", err.Error())
	}
	return nil
}

// apiAdminOnly lets only admins through (403 for others), before the body is
// read.
func apiAdminOnly(h apiHandler) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, me core.Agent) error {
		if me.Role != core.RoleAdmin {
			return &httpx.RequestError{Status: http.StatusForbidden, Code: httpx.CodeForbidden, Msg: "admins only"}
		}
		return h(w, r, me)
	}
}

type apiSessionKey struct{}

// withAPISession returns ctx carrying the session the request authenticated with.
func withAPISession(ctx context.Context, s core.Session) context.Context {
	return context.WithValue(ctx, apiSessionKey{}, s)
}

// apiSessionFrom returns the session in ctx.
func apiSessionFrom(ctx context.Context) (core.Session, bool) {
	s, ok := ctx.Value(apiSessionKey{}).(core.Session)
	return s, ok
}

// apiRequest is a decoded JSON request body that can check its own fields.
type apiRequest interface{ validate() error }

// apiDecode reads a strict JSON body of at most maxBytes into a T and
// validates it: 400 for malformed JSON, unknown fields or bad values, 413
// when too large, 415 for another Content-Type.
func apiDecode[T any, P interface {
	*T
	apiRequest
}](w http.ResponseWriter, r *http.Request, maxBytes int64) (T, error) {
	var v T
	if err := httpx.DecodeJSON(w, r, maxBytes, P(&v)); err != nil {
		return v, err
	}
	return v, P(&v).validate()
}

// apiParse is apiDecode on bytes already read (for fuzzing the decoders).
func apiParse[T any, P interface {
	*T
	apiRequest
}](data []byte) (T, error) {
	var v T
	if err := httpx.Unmarshal(data, P(&v)); err != nil {
		return v, err
	}
	return v, P(&v).validate()
}

// apiPathID reads the {id} path segment: a positive decimal integer, or 400.
func apiPathID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, err := apiParseID(s)
	if err != nil {
		return 0, httpx.BadRequest("id in the path must be a positive integer, got %q", s)
	}
	return id, nil
}

// apiParseID reads a positive decimal integer: digits only, no sign, no
// leading zero.
func apiParseID(s string) (int64, error) {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return 0, errAPIBadID
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errAPIBadID
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errAPIBadID
	}
	return id, nil
}

var errAPIBadID = errors.New("not a positive integer")

// apiTime returns t in UTC, or nil for the zero time (null in JSON).
func apiTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
