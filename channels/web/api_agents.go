package web

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Agents: everyone lists them; admins create, change, deactivate and reset
// passwords (core.Service enforces it too).

// Availability values of apiAgentView.
const (
	apiAvailable = "available" // routed to: at the console (or /on) and not away
	apiAway      = "away"      // at the console, set away
	apiOffline   = "offline"
)

// apiAgentView is an agent as the API shows it.
type apiAgentView struct {
	ID    int64     `json:"id"`
	Email string    `json:"email,omitempty"` // to admins and to the agent themselves
	Name  string    `json:"name"`
	Role  core.Role `json:"role"`
	// Active: a deactivated agent cannot log in and is not routed to.
	Active       bool       `json:"active"`
	Availability string     `json:"availability"`
	CreatedAt    *time.Time `json:"created_at"`
	// The channels the agent answers from besides the console, to admins
	// and to the agent themselves: empty when not linked.
	WeComUserID *string `json:"wecom_userid,omitempty"`
	SlackUser   *string `json:"slack_user,omitempty"`
}

// presenceOf returns a function telling an agent's availability, reading
// the presence once.
func (a *api) presenceOf(ctx context.Context) (func(core.Agent) string, error) {
	p := a.svc.Presence()
	avail, err := p.Available(ctx)
	if err != nil {
		return nil, err
	}
	return func(ag core.Agent) string {
		switch {
		case !ag.Active:
			return apiOffline
		case slices.Contains(avail, ag.ID):
			return apiAvailable
		case p.Connected(ag.ID):
			return apiAway
		}
		return apiOffline
	}, nil
}

// apiViewAgent is ag as the API shows it; private adds what only admins and
// the agent themselves see: the email and the channel links.
func apiViewAgent(ag core.Agent, availability string, private bool) apiAgentView {
	v := apiAgentView{ID: ag.ID, Name: ag.Name, Role: ag.Role, Active: ag.Active, Availability: availability,
		CreatedAt: apiTime(ag.CreatedAt)}
	if private {
		v.Email = ag.Email
		v.WeComUserID, v.SlackUser = &ag.WeComUserID, &ag.SlackUser
	}
	return v
}

func (a *api) agentView(ctx context.Context, ag core.Agent, private bool) (apiAgentView, error) {
	of, err := a.presenceOf(ctx)
	if err != nil {
		return apiAgentView{}, err
	}
	return apiViewAgent(ag, of(ag), private), nil
}

type apiAgentList struct {
	Agents []apiAgentView `json:"agents"`
}

// listAgents lists every agent, active or not, by ID.
func (a *api) listAgents(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	ctx := r.Context()
	all, err := a.store.Agents(ctx)
	if err != nil {
		return err
	}
	of, err := a.presenceOf(ctx)
	if err != nil {
		return err
	}
	out := apiAgentList{Agents: make([]apiAgentView, len(all))}
	for i, ag := range all {
		out.Agents[i] = apiViewAgent(ag, of(ag), me.Role == core.RoleAdmin || ag.ID == me.ID)
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

type apiNewAgent struct {
	Email       string    `json:"email"`
	Name        string    `json:"name"`
	Role        core.Role `json:"role"`
	Password    string    `json:"password"`
	WeComUserID string    `json:"wecom_userid"`
	SlackUser   string    `json:"slack_user"`
}

func (q *apiNewAgent) validate() error {
	if q.Email == "" || q.Name == "" || q.Password == "" {
		return httpx.BadRequest("email, name and password are required")
	}
	if len(q.Password) > apiMaxPassword {
		return httpx.BadRequest("password longer than %d bytes", apiMaxPassword)
	}
	return nil // core checks the rest
}

func (a *api) createAgent(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[apiNewAgent](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	ctx := r.Context()
	ag, err := a.svc.CreateAgent(ctx, me.ID, core.Agent{Email: req.Email, Name: req.Name, Role: req.Role,
		WeComUserID: req.WeComUserID, SlackUser: req.SlackUser}, req.Password)
	if err != nil {
		return err
	}
	v, err := a.agentView(ctx, ag, true)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusCreated, v)
	return nil
}

type apiAgentPatch struct {
	Name        *string    `json:"name"`
	Role        *core.Role `json:"role"`
	Active      *bool      `json:"active"`
	WeComUserID *string    `json:"wecom_userid"`
	SlackUser   *string    `json:"slack_user"`
}

func (q *apiAgentPatch) validate() error {
	if q.Name == nil && q.Role == nil && q.Active == nil && q.WeComUserID == nil && q.SlackUser == nil {
		return httpx.BadRequest("nothing to change: give name, role, active, wecom_userid or slack_user")
	}
	return nil
}

// patchAgent changes an agent. Deactivating one sends their open
// conversations back to the queue (routed to others) and ends their
// sessions; a change that would leave no active admin is 409.
func (a *api) patchAgent(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	req, err := apiDecode[apiAgentPatch](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	ctx := r.Context()
	ag, err := a.svc.UpdateAgent(ctx, me.ID, id, core.AgentChange{Name: req.Name, Role: req.Role, Active: req.Active,
		WeComUserID: req.WeComUserID, SlackUser: req.SlackUser})
	if err != nil {
		return err
	}
	v, err := a.agentView(ctx, ag, true)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, v)
	return nil
}

type apiPasswordReset struct {
	Password string `json:"password"`
}

func (q *apiPasswordReset) validate() error {
	if q.Password == "" {
		return httpx.BadRequest("password is required")
	}
	if len(q.Password) > apiMaxPassword {
		return httpx.BadRequest("password longer than %d bytes", apiMaxPassword)
	}
	return nil
}

// resetPassword sets an agent's password and ends all their sessions (the
// admin's own too, when they reset their own).
func (a *api) resetPassword(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	req, err := apiDecode[apiPasswordReset](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	if err := a.svc.ResetPassword(r.Context(), me.ID, id, req.Password); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
