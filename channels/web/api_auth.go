package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Login, logout and the agent's own account.

// apiMaxPassword bounds a password field; bcrypt reads at most 72 bytes
// and core refuses longer passwords, so anything longer is a wrong one.
const apiMaxPassword = 1024

// errAPIBadLogin is the one answer to a wrong password, an unknown email and a
// deactivated agent alike, so the answer does not tell which emails exist.
var errAPIBadLogin = &httpx.RequestError{Status: http.StatusUnauthorized, Code: httpx.CodeUnauthorized, Msg: "wrong email or password"}

type apiLoginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (q *apiLoginRequest) validate() error {
	q.Email = strings.TrimSpace(q.Email)
	switch {
	case q.Email == "" || q.Password == "":
		return httpx.BadRequest("email and password are required")
	case len(q.Email) > 254 || !utf8.ValidString(q.Email):
		return httpx.BadRequest("email is not an email address")
	case len(q.Password) > apiMaxPassword:
		return httpx.BadRequest("password longer than %d bytes", apiMaxPassword)
	}
	return nil
}

// apiLoginResponse answers a successful login.
type apiLoginResponse struct {
	Token     string       `json:"token"`
	ExpiresAt time.Time    `json:"expires_at"`
	Agent     apiAgentView `json:"agent"`
}

// login checks an agent's email and password and starts a session. Failures
// are throttled per account and per client address; a throttled login is
// refused (429) before the password is looked at.
func (a *api) login(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	req, err := apiDecode[apiLoginRequest](w, r, apiMaxSmallBody)
	if err != nil {
		a.fail(w, err)
		return
	}
	ctx := r.Context()
	ip := httpx.ClientIP(r, a.trusted)
	at, wait := a.throttle.begin(strings.ToLower(req.Email), ipKey(ip))
	if wait > 0 {
		httpx.TooMany(w, wait)
		return
	}
	agent, err := a.store.AgentByEmail(ctx, req.Email)
	if err != nil && !errors.Is(err, core.ErrNotFound) {
		a.throttle.abandon(at)
		a.fail(w, err)
		return
	}
	// An unknown email checks against a dummy hash: the same work, the same
	// answer.
	if ok := agent.CheckPassword(req.Password); !ok || !agent.Active {
		a.fail(w, errAPIBadLogin)
		return
	}
	a.throttle.succeeded(at)

	token, hash, err := newAgentToken()
	if err != nil {
		a.fail(w, err)
		return
	}
	now := a.c.now().UTC()
	sess := core.Session{
		TokenHash: hash, AgentID: agent.ID, CreatedAt: now, ExpiresAt: now.Add(a.c.cfg.AgentTokenTTL),
		IP: ip.String(), UserAgent: apiTruncate(r.UserAgent(), 256),
	}
	if err := a.store.CreateSession(ctx, sess); err != nil {
		a.fail(w, err)
		return
	}
	// A password reset or a deactivation that finished while the password
	// was checked revoked the sessions before this one was made: the agent
	// as it is now decides. (They change the agent before they revoke, so
	// one that is not seen here revokes this session too.)
	if cur, err := a.store.Agent(ctx, agent.ID); err != nil || !cur.Active || cur.PasswordHash != agent.PasswordHash {
		if rerr := a.store.RevokeSession(context.WithoutCancel(ctx), hash); rerr != nil {
			a.log.Warn("login: could not revoke a session made beside a password reset or deactivation", "agent", agent.ID, "err", rerr)
		}
		if err != nil && !errors.Is(err, core.ErrNotFound) {
			a.fail(w, err)
			return
		}
		a.fail(w, errAPIBadLogin)
		return
	}
	me, err := a.agentView(ctx, agent, true)
	if err != nil {
		a.fail(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, apiLoginResponse{Token: token, ExpiresAt: sess.ExpiresAt, Agent: me})
}

// logout revokes the token the request carries.
func (a *api) logout(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	sess, _ := apiSessionFrom(r.Context())
	if err := a.store.RevokeSession(r.Context(), sess.TokenHash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) getMe(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	v, err := a.agentView(r.Context(), me, true)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, v)
	return nil
}

type apiMeRequest struct {
	Name *string `json:"name"`
	Away *bool   `json:"away"`
}

func (q *apiMeRequest) validate() error {
	if q.Name == nil && q.Away == nil {
		return httpx.BadRequest("nothing to change: give name or away")
	}
	return nil
}

// patchMe renames the agent or sets them away from routing (or back).
func (a *api) patchMe(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[apiMeRequest](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if req.Name != nil {
		if me, err = a.svc.UpdateAgent(ctx, me.ID, me.ID, core.AgentChange{Name: req.Name}); err != nil {
			return err
		}
	}
	if req.Away != nil {
		if err := a.svc.SetAway(ctx, me.ID, *req.Away); err != nil {
			return err
		}
	}
	return a.getMe(w, r, me)
}

type apiPasswordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

func (q *apiPasswordChange) validate() error {
	switch {
	case q.Current == "" || q.New == "":
		return httpx.BadRequest("current and new are required")
	case len(q.Current) > apiMaxPassword || len(q.New) > apiMaxPassword:
		return httpx.BadRequest("password longer than %d bytes", apiMaxPassword)
	}
	return nil
}

// changePassword sets the agent's own password after checking the current
// one, and ends their other sessions; the one making the request goes on.
// Wrong current passwords count against the login throttle, so a stolen
// token cannot be used to guess the password.
func (a *api) changePassword(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[apiPasswordChange](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	ctx := r.Context()
	at, wait := a.throttle.begin(strings.ToLower(me.Email), ipKey(httpx.ClientIP(r, a.trusted)))
	if wait > 0 {
		httpx.TooMany(w, wait)
		return nil
	}
	err = a.svc.ChangePassword(ctx, me.ID, req.Current, req.New)
	switch {
	case errors.Is(err, core.ErrForbidden):
		return err // counted as a failed login
	case err != nil:
		a.throttle.abandon(at)
		return err
	}
	a.throttle.succeeded(at)
	// ChangePassword revoked every session; this one is put back, unless
	// an admin's reset or a deactivation came meanwhile (they revoke
	// after they change the agent: see login).
	sess, _ := apiSessionFrom(ctx)
	if err := a.store.CreateSession(context.WithoutCancel(ctx), sess); err != nil {
		return err
	}
	// (A failed read keeps the session: the password did change.)
	if cur, err := a.store.Agent(context.WithoutCancel(ctx), me.ID); err == nil && (!cur.Active || !cur.CheckPassword(req.New)) {
		if rerr := a.store.RevokeSession(context.WithoutCancel(ctx), sess.TokenHash); rerr != nil {
			return rerr
		}
		return fmt.Errorf("%w: the account changed meanwhile; sign in again", core.ErrConflict)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// apiTruncate cuts s to at most n bytes, on a character boundary.
func apiTruncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
