package core

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Agent accounts: admins create and change agents and reset their
// passwords; agents rename themselves and change their own password. Every
// channel (the REST API today, an admin command tomorrow) goes through these
// methods, so the rules hold whatever the caller:
//   - only an active admin manages other agents (ErrForbidden);
//   - no change may leave the deployment without an active admin
//     (ErrConflict);
//   - a new password, a deactivation, revokes every login session of the
//     agent.

// MaxNameLength is the longest agent name kefu accepts, in characters.
const MaxNameLength = 100

// AgentChange is a change to an agent's profile. Nil fields stay as they are.
type AgentChange struct {
	Name   *string
	Role   *Role
	Active *bool
}

// CreateAgent adds an agent with the given password on behalf of by, who
// must be an active admin. Email, Name and Role (default agent) are taken
// from a; an email already taken, in any case, is ErrConflict.
func (s *Service) CreateAgent(ctx context.Context, by int64, a Agent, password string) (Agent, error) {
	if _, err := s.activeAdmin(ctx, by); err != nil {
		return Agent{}, err
	}
	email, err := checkEmail(a.Email)
	if err != nil {
		return Agent{}, err
	}
	name, err := checkName(a.Name)
	if err != nil {
		return Agent{}, err
	}
	role := a.Role
	if role == "" {
		role = RoleAgent
	}
	if err := checkRole(role); err != nil {
		return Agent{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return Agent{}, err
	}
	created, err := s.store.CreateAgent(ctx, Agent{
		Email: email, Name: name, Role: role, PasswordHash: hash, Active: true, CreatedAt: s.now(),
	})
	if errors.Is(err, ErrConflict) {
		return Agent{}, fmt.Errorf("%w: an agent with email %s exists", ErrConflict, email)
	}
	return created, err
}

// UpdateAgent applies ch to agent id on behalf of by. An active agent may
// change their own name; anything else needs an active admin. A change that
// would leave no active admin is ErrConflict. Deactivating runs Deactivate
// (the agent's open conversations go back to the queue and are routed to
// others), keeps the agent away from routing and revokes their sessions;
// reactivating lets them be routed to again.
func (s *Service) UpdateAgent(ctx context.Context, by, id int64, ch AgentChange) (Agent, error) {
	actor, err := s.activeAgent(ctx, by)
	if err != nil {
		return Agent{}, err
	}
	if (by != id || ch.Role != nil || ch.Active != nil) && actor.Role != RoleAdmin {
		return Agent{}, fmt.Errorf("%w: only an admin may change agents", ErrForbidden)
	}
	if ch.Name != nil {
		name, err := checkName(*ch.Name)
		if err != nil {
			return Agent{}, err
		}
		ch.Name = &name
	}
	if ch.Role != nil {
		if err := checkRole(*ch.Role); err != nil {
			return Agent{}, err
		}
	}

	// One change at a time on this node, so that the last-admin check sees
	// the others' results.
	s.accountsMu.Lock()
	defer s.accountsMu.Unlock()
	cur, err := s.store.Agent(ctx, id)
	if err != nil {
		return Agent{}, err
	}
	next := cur
	if ch.Name != nil {
		next.Name = *ch.Name
	}
	if ch.Role != nil {
		next.Role = *ch.Role
	}
	if ch.Active != nil {
		next.Active = *ch.Active
	}
	if cur.Active && cur.Role == RoleAdmin && !(next.Active && next.Role == RoleAdmin) {
		if err := s.checkOtherAdmin(ctx, id); err != nil {
			return Agent{}, err
		}
	}
	deactivate := cur.Active && !next.Active
	if deactivate {
		next.Active = true // Deactivate flips it, after the other fields are saved
	}
	if next != cur {
		if err := s.store.UpdateAgent(ctx, next); err != nil {
			return Agent{}, err
		}
	}
	switch {
	case deactivate:
		// Away first, so that a console still connected does not get the
		// conversations back when Deactivate drains the queue.
		s.presence.SetAway(id, true)
		if err := s.Deactivate(ctx, by, id); err != nil {
			return Agent{}, err
		}
		if _, err := s.store.RevokeSessions(ctx, id); err != nil {
			return Agent{}, err
		}
		next.Active = false
	case !cur.Active && next.Active:
		// Back, and not away: whatever was stored before the deactivation.
		if err := s.saveFlag(ctx, flagAway, id, false); err != nil {
			return Agent{}, err
		}
		s.presence.SetAway(id, false)
	}
	return next, nil
}

// checkOtherAdmin fails with ErrConflict unless an active admin other than
// id exists.
func (s *Service) checkOtherAdmin(ctx context.Context, id int64) error {
	all, err := s.store.Agents(ctx)
	if err != nil {
		return err
	}
	for _, a := range all {
		if a.ID != id && a.Active && a.Role == RoleAdmin {
			return nil
		}
	}
	return fmt.Errorf("%w: agent %d is the last active admin", ErrConflict, id)
}

// ChangePassword sets an agent's own password after checking their current
// one (a wrong one is ErrForbidden), and revokes every session of the agent:
// the caller re-creates the one it is serving, if it wants to keep it.
func (s *Service) ChangePassword(ctx context.Context, agentID int64, current, next string) error {
	a, err := s.activeAgent(ctx, agentID)
	if err != nil {
		return err
	}
	if !a.CheckPassword(current) {
		return fmt.Errorf("%w: the current password is wrong", ErrForbidden)
	}
	return s.setPassword(ctx, a, next)
}

// ResetPassword sets another agent's password on behalf of by, who must be
// an active admin, and revokes every session of that agent.
func (s *Service) ResetPassword(ctx context.Context, by, agentID int64, password string) error {
	if _, err := s.activeAdmin(ctx, by); err != nil {
		return err
	}
	a, err := s.store.Agent(ctx, agentID)
	if err != nil {
		return err
	}
	return s.setPassword(ctx, a, password)
}

func (s *Service) setPassword(ctx context.Context, a Agent, password string) error {
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	// The agent is read again under the lock, so that a concurrent profile
	// change is not undone.
	s.accountsMu.Lock()
	cur, err := s.store.Agent(ctx, a.ID)
	if err == nil {
		cur.PasswordHash = hash
		err = s.store.UpdateAgent(ctx, cur)
	}
	s.accountsMu.Unlock()
	if err != nil {
		return err
	}
	_, err = s.store.RevokeSessions(ctx, a.ID)
	return err
}

func (s *Service) activeAdmin(ctx context.Context, id int64) (Agent, error) {
	a, err := s.activeAgent(ctx, id)
	if err != nil {
		return a, err
	}
	if a.Role != RoleAdmin {
		return a, fmt.Errorf("%w: only an admin may manage agents", ErrForbidden)
	}
	return a, nil
}

// checkEmail returns the address in lower case, or ErrInvalid.
func checkEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || len(email) > 254 {
		return "", fmt.Errorf("%w: %q is not an email address", ErrInvalid, email)
	}
	return strings.ToLower(email), nil
}

// checkName returns the trimmed name, or ErrInvalid when it is empty, too
// long or holds control characters.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > MaxNameLength {
		return "", fmt.Errorf("%w: a name has 1 to %d characters", ErrInvalid, MaxNameLength)
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("%w: a name may not hold control characters", ErrInvalid)
	}
	return name, nil
}

func checkRole(r Role) error {
	if r != RoleAgent && r != RoleAdmin {
		return fmt.Errorf("%w: role must be %q or %q", ErrInvalid, RoleAgent, RoleAdmin)
	}
	return nil
}
