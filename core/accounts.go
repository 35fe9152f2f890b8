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
//     (ErrConflict): checked here for the message, and by the store's
//     UpdateAgent against changes made at the same moment on other nodes;
//   - a new password, a deactivation, revokes every login session of the
//     agent.

// MaxNameLength is the longest agent name kefu accepts, in characters.
const MaxNameLength = 100

// AgentChange is a change to an agent's profile. Nil fields stay as they
// are; an empty WeComUserID or SlackUser unlinks the agent from Work WeChat
// or Slack.
type AgentChange struct {
	Name        *string
	Role        *Role
	Active      *bool
	WeComUserID *string
	SlackUser   *string
}

// The forms of the ids that link an agent to the channels they answer from.
const (
	// WeComUserIDRule is Work WeChat's rule for a member's UserID, which is
	// unique in the company ignoring case.
	WeComUserIDRule = "1 to 64 letters, digits, _ - @ or ., starting with a letter or digit"
	// SlackUserRule is the form of a Slack user id (W… on Enterprise Grid).
	SlackUserRule = "U or W followed by up to 31 capital letters and digits, like U0123ALICE"
)

// ValidWeComUserID tells whether id follows WeComUserIDRule.
func ValidWeComUserID(id string) bool {
	if id == "" || len(id) > 64 || !isAlnum(id[0]) {
		return false
	}
	for i := range len(id) {
		if c := id[i]; !isAlnum(c) && !strings.ContainsRune("_-@.", rune(c)) {
			return false
		}
	}
	return true
}

// ValidSlackUser tells whether id follows SlackUserRule.
func ValidSlackUser(id string) bool {
	if len(id) < 2 || len(id) > 32 || (id[0] != 'U' && id[0] != 'W') {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
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
	links := AgentChange{WeComUserID: &a.WeComUserID, SlackUser: &a.SlackUser}
	if err := checkLinks(&links); err != nil {
		return Agent{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return Agent{}, err
	}
	s.accountsMu.Lock()
	defer s.accountsMu.Unlock()
	if err := s.checkLinksFree(ctx, 0, links); err != nil {
		return Agent{}, err
	}
	created, err := s.store.CreateAgent(ctx, Agent{
		Email: email, Name: name, Role: role, PasswordHash: hash, Active: true,
		WeComUserID: *links.WeComUserID, SlackUser: *links.SlackUser, CreatedAt: s.now(),
	})
	if errors.Is(err, ErrConflict) {
		// Taken since the check, through another node: say which.
		if err := s.checkLinksFree(ctx, 0, links); err != nil {
			return Agent{}, err
		}
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
	if (by != id || ch.Role != nil || ch.Active != nil || ch.WeComUserID != nil || ch.SlackUser != nil) && actor.Role != RoleAdmin {
		return Agent{}, fmt.Errorf("%w: only an admin may change agents", ErrForbidden)
	}
	if err := checkLinks(&ch); err != nil {
		return Agent{}, err
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
	var deactivate bool
	cur, next, err := s.changeAgent(ctx, id, func(cur Agent) (Agent, error) {
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
		if err := s.checkLinksFree(ctx, id, ch); err != nil {
			return Agent{}, err
		}
		if ch.WeComUserID != nil {
			next.WeComUserID = *ch.WeComUserID
		}
		if ch.SlackUser != nil {
			next.SlackUser = *ch.SlackUser
		}
		if cur.Active && cur.Role == RoleAdmin && !(next.Active && next.Role == RoleAdmin) {
			if err := s.checkOtherAdmin(ctx, id); err != nil {
				return Agent{}, err
			}
		}
		// Deactivating an agent who is inactive already finishes a
		// deactivation that failed part way (its conversations, its
		// sessions).
		deactivate = !next.Active && (cur.Active || ch.Active != nil)
		if deactivate && cur.Active {
			next.Active = true // Deactivate flips it, after the other fields are saved
		}
		return next, nil
	})
	if err != nil {
		if errors.Is(err, ErrConflict) && !errors.Is(err, ErrStale) {
			// A link taken since the check, through another node.
			if lerr := s.checkLinksFree(ctx, id, ch); lerr != nil {
				return Agent{}, lerr
			}
		}
		return Agent{}, err
	}
	switch {
	case deactivate:
		// Away first, so that a console still connected does not get the
		// conversations back when Deactivate drains the queue.
		s.presence.SetAway(id, true)
		if err := s.Deactivate(ctx, by, id); err != nil {
			if errors.Is(err, ErrConflict) {
				// Refused by the store (the last active admin, after
				// another node's change): still active, away as stored.
				away, _ := s.store.Setting(ctx, flagSetting(flagAway, id))
				s.presence.SetAway(id, away == "1")
			}
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

// changeAgent reads agent id, lets change turn it into the agent to store,
// and stores that. When another node changed the agent in between
// (ErrStale) it reads it again and calls change again, a few times: a
// change applies to the agent as it is, and undoes no other. An error from
// change, or an agent it leaves as it was, stores nothing.
func (s *Service) changeAgent(ctx context.Context, id int64, change func(cur Agent) (Agent, error)) (cur, next Agent, err error) {
	for attempt := 1; ; attempt++ {
		if cur, err = s.store.Agent(ctx, id); err != nil {
			return Agent{}, Agent{}, err
		}
		if next, err = change(cur); err != nil {
			return Agent{}, Agent{}, err
		}
		if next.Same(cur) {
			return cur, next, nil
		}
		err = s.store.UpdateAgent(ctx, cur, next)
		if err == nil {
			return cur, next, nil
		}
		if !errors.Is(err, ErrStale) || attempt == staleAttempts {
			return Agent{}, Agent{}, err
		}
	}
}

// staleAttempts bounds changeAgent's reads: each failed one lost to another
// node's change of the same agent.
const staleAttempts = 5

// checkLinks trims ch's WeComUserID and SlackUser, and fails with
// ErrInvalid when one is not in its channel's form. Empty unlinks.
func checkLinks(ch *AgentChange) error {
	if ch.WeComUserID != nil {
		id := strings.TrimSpace(*ch.WeComUserID)
		if id != "" && !ValidWeComUserID(id) {
			return fmt.Errorf("%w: wecom_userid %q: %s", ErrInvalid, id, WeComUserIDRule)
		}
		ch.WeComUserID = &id
	}
	if ch.SlackUser != nil {
		id := strings.TrimSpace(*ch.SlackUser)
		if id != "" && !ValidSlackUser(id) {
			return fmt.Errorf("%w: slack_user %q: %s", ErrInvalid, id, SlackUserRule)
		}
		ch.SlackUser = &id
	}
	return nil
}

// checkLinksFree fails with ErrConflict when another agent than id (0: a
// new agent) has ch's WeComUserID (in any case, as Work WeChat compares
// them) or SlackUser: a message from Work WeChat or Slack must name one
// agent. The caller holds accountsMu. accountsMu orders the changes of one
// node only: the store's unique indexes on both links refuse a link another
// node gave since (ErrConflict), and this check, run again, names it.
func (s *Service) checkLinksFree(ctx context.Context, id int64, ch AgentChange) error {
	wecom := ch.WeComUserID != nil && *ch.WeComUserID != ""
	slack := ch.SlackUser != nil && *ch.SlackUser != ""
	if !wecom && !slack {
		return nil
	}
	all, err := s.store.Agents(ctx)
	if err != nil {
		return err
	}
	for _, a := range all {
		switch {
		case a.ID == id:
		case wecom && strings.EqualFold(a.WeComUserID, *ch.WeComUserID):
			return fmt.Errorf("%w: wecom_userid %s is %s's", ErrConflict, *ch.WeComUserID, a.Name)
		case slack && a.SlackUser == *ch.SlackUser:
			return fmt.Errorf("%w: slack_user %s is %s's", ErrConflict, *ch.SlackUser, a.Name)
		}
	}
	return nil
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
	// Only over the password just checked: one set since (an admin's
	// reset, on another node) is not undone.
	return s.setPassword(ctx, a, next, func(cur Agent) error {
		if cur.PasswordHash != a.PasswordHash || !cur.Active {
			return fmt.Errorf("%w: the password or the account changed meanwhile; sign in again", ErrConflict)
		}
		return nil
	})
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
	return s.setPassword(ctx, a, password, nil)
}

// setPassword stores password's hash for agent a and revokes a's sessions.
// check, when set, vets the agent as it is stored before the write (each
// time changeAgent reads it).
func (s *Service) setPassword(ctx context.Context, a Agent, password string, check func(cur Agent) error) error {
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	// The agent is read again, so that a concurrent profile change is not
	// undone.
	s.accountsMu.Lock()
	_, _, err = s.changeAgent(ctx, a.ID, func(cur Agent) (Agent, error) {
		if check != nil {
			if err := check(cur); err != nil {
				return Agent{}, err
			}
		}
		cur.PasswordHash = hash
		return cur, nil
	})
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
