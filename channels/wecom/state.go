package wecom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kefuhq/kefu/core"
)

// Per-agent state lives in the store's settings, so that every node sees
// it and it survives restarts. Each key has one writer, so no write can
// undo another: the selection is written only by the callback handler, the
// notification record only by the follower.
//
// "Since" is measured in message IDs, which increase in commit order: a
// selection remembers the follower's cursor when it was made, and the
// notification record remembers, per conversation, the ID of the last
// message the agent was notified of. A notification from another
// conversation "arrived since" the selection when its ID is above the
// selection's mark.

// selection is the conversation an agent chose for plain replies.
type selection struct {
	Conv int64 // 0: none
	Mark int64 // the follower's cursor when it was chosen
	// Mine is set when the conversation was the agent's when chosen (not
	// waiting in the queue): once someone puts it back in the queue, a
	// plain reply must not take it again unasked.
	Mine bool
}

// seen is what the follower has notified an agent of.
type seen struct {
	// Max is the ID of the last message handled for this agent: a message
	// handled again after a restart (the follower is at least once) is
	// not notified twice.
	Max int64 `json:"max"`
	// Last is the conversation of the latest notification that counts for
	// choosing a plain reply's conversation (an assignment or a customer
	// message).
	Last int64 `json:"last"`
	// Conv maps a conversation to the ID of the last message the agent was
	// shown from it (by a notification or an assignment's backlog).
	Conv map[int64]int64 `json:"conv"`
}

// maxSeenConvs bounds seen.Conv: the oldest entries go first.
const maxSeenConvs = 64

func (s *seen) record(conv, id int64) {
	if s.Conv == nil {
		s.Conv = map[int64]int64{}
	}
	s.Conv[conv] = max(s.Conv[conv], id)
	s.Last = conv
	for len(s.Conv) > maxSeenConvs {
		oldest, at := int64(0), int64(-1)
		for c, v := range s.Conv {
			if at < 0 || v < at || (v == at && c < oldest) {
				oldest, at = c, v
			}
		}
		delete(s.Conv, oldest)
	}
}

func (c *Channel) selKey(agentID int64) string {
	return fmt.Sprintf("wecom.%s.sel.%d", c.name, agentID)
}
func (c *Channel) seenKey(agentID int64) string {
	return fmt.Sprintf("wecom.%s.seen.%d", c.name, agentID)
}

func (c *Channel) loadSelection(ctx context.Context, agentID int64) (selection, error) {
	v, err := c.store.Setting(ctx, c.selKey(agentID))
	if errors.Is(err, core.ErrNotFound) {
		return selection{}, nil
	}
	if err != nil {
		return selection{}, err
	}
	var s selection
	var mine int
	// A selection saved before Mine was kept has two fields.
	if n, err := fmt.Sscan(v, &s.Conv, &s.Mark, &mine); n < 2 || (err != nil && n != 2) {
		return selection{}, nil // unreadable: as if none
	}
	s.Mine = mine == 1
	return s, nil
}

// selectConv makes conv the agent's selection, marked with where the
// follower is now: its saved cursor, or the last notification it queued for
// the agent if that is later (the cursor is saved after each batch). That
// is seen.Max, saved once a notification is queued, not seen.Conv, saved
// just before (notifyShown): a notification about to go out is newer than
// the selection, so a plain reply after it still asks.
//
// mine says the conversation is the agent's now (not waiting in the queue).
func (c *Channel) selectConv(ctx context.Context, agentID, conv int64, mine bool) error {
	mark := c.cursor(ctx)
	st, err := c.loadSeen(ctx, agentID)
	if err != nil {
		return err
	}
	return c.saveSelection(ctx, agentID, selection{Conv: conv, Mark: max(mark, st.Max), Mine: mine})
}

// saveSelection stores s as loadSelection reads it: "CONV MARK MINE".
func (c *Channel) saveSelection(ctx context.Context, agentID int64, s selection) error {
	mine := 0
	if s.Mine {
		mine = 1
	}
	return c.store.PutSetting(ctx, c.selKey(agentID), fmt.Sprintf("%d %d %d", s.Conv, s.Mark, mine))
}

// markMine records that the agent's selection, if it is conv, is theirs
// now (a plain reply took it), keeping its mark.
func (c *Channel) markMine(ctx context.Context, agentID, conv int64) error {
	s, err := c.loadSelection(ctx, agentID)
	if err != nil || s.Conv != conv || s.Mine {
		return err
	}
	s.Mine = true
	return c.saveSelection(ctx, agentID, s)
}

// unselect clears the agent's selection if it is conv (any when conv is 0).
func (c *Channel) unselect(ctx context.Context, agentID, conv int64) error {
	s, err := c.loadSelection(ctx, agentID)
	if err != nil || s.Conv == 0 || (conv != 0 && s.Conv != conv) {
		return err
	}
	return c.saveSelection(ctx, agentID, selection{})
}

// cursor is the follower's position in the message log: bridge.Follower
// keeps "ID TIME" under "follow.NAME". 0 when unknown, which makes every
// notification count as newer (the safe side: kefu asks for #123).
func (c *Channel) cursor(ctx context.Context) int64 {
	v, err := c.store.Setting(ctx, "follow."+c.name)
	if err != nil {
		return 0
	}
	id, _, _ := strings.Cut(v, " ")
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (c *Channel) loadSeen(ctx context.Context, agentID int64) (seen, error) {
	v, err := c.store.Setting(ctx, c.seenKey(agentID))
	if errors.Is(err, core.ErrNotFound) {
		return seen{}, nil
	}
	if err != nil {
		return seen{}, err
	}
	var s seen
	if json.Unmarshal([]byte(v), &s) != nil {
		return seen{}, nil
	}
	return s, nil
}

func (c *Channel) saveSeen(ctx context.Context, agentID int64, s seen) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return c.store.PutSetting(ctx, c.seenKey(agentID), string(b))
}

// mayAnswer reports whether agent a may answer conv from Work WeChat: it is
// theirs, or nobody's (answering takes it, as in the console). A
// conversation assigned to someone else is refused for admins too: they
// /transfer it to themselves first, so that no customer gets answers from
// two people at once by accident.
func mayAnswer(a core.Agent, conv core.Conversation) bool {
	return conv.AssigneeID == a.ID || conv.AssigneeID == 0
}

// target finds the conversation a plain reply from a goes to. When there is
// none, problem says why, for the agent.
func (c *Channel) target(ctx context.Context, a core.Agent) (conv core.Conversation, problem string, err error) {
	sel, err := c.loadSelection(ctx, a.ID)
	if err != nil {
		return conv, "", err
	}
	st, err := c.loadSeen(ctx, a.ID)
	if err != nil {
		return conv, "", err
	}
	if sel.Conv != 0 {
		conv, err = c.store.Conversation(ctx, sel.Conv)
		if err != nil && !errors.Is(err, core.ErrNotFound) {
			return conv, "", err
		}
		switch {
		case err != nil || !mayAnswer(a, conv):
			who := c.assigneeName(ctx, conv.AssigneeID)
			return conv, fmt.Sprintf("#%d, which you selected, is now handled by %s. Nothing was sent: start your message with #123.", sel.Conv, who), nil
		case conv.Status == core.StatusResolved:
			// Closed by someone else (the agent's own /close clears the
			// selection): a plain reply must not reopen it unasked.
			return conv, fmt.Sprintf("#%d, which you selected, is closed. Nothing was sent: start your message with #%d to reopen it.", sel.Conv, sel.Conv), nil
		case sel.Mine && conv.AssigneeID != a.ID:
			return conv, fmt.Sprintf("#%d, which you selected, was put back in the queue. Nothing was sent: start your message with #%d to take it again.", sel.Conv, sel.Conv), nil
		}
		var since []int64
		for cid, id := range st.Conv {
			if cid != sel.Conv && id > sel.Mark {
				since = append(since, cid)
			}
		}
		if len(since) > 0 {
			slices.Sort(since)
			return conv, fmt.Sprintf("New messages from %s arrived since you selected #%d. Nothing was sent: start your message with the conversation's number (#%d text).",
				numbers(since), sel.Conv, sel.Conv), nil
		}
		return conv, "", nil
	}
	open, err := c.store.Conversations(ctx, core.ConversationFilter{AssigneeID: a.ID, Statuses: []core.ConversationStatus{core.StatusOpen}, Limit: 20})
	if err != nil {
		return conv, "", err
	}
	switch {
	case len(open) == 0:
		return conv, "You have no open conversation. Nothing was sent: start your message with #123, or /take one (/list shows the queue).", nil
	case len(open) == 1 && (st.Last == 0 || st.Last == open[0].ID):
		return open[0], "", nil
	}
	ids := make([]int64, len(open))
	for i, o := range open {
		ids[i] = o.ID
	}
	slices.Sort(ids)
	return conv, fmt.Sprintf("Which conversation? Nothing was sent: start your message with #123 (yours: %s).", numbers(ids)), nil
}

// numbers formats conversation numbers: "#12, #15".
func numbers(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = "#" + strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ", ")
}

// assigneeName names the agent id for people ("nobody" for 0).
func (c *Channel) assigneeName(ctx context.Context, id int64) string {
	if id == 0 {
		return "nobody (it is back in the queue)"
	}
	a, ok, err := c.agentByID(ctx, id)
	if err != nil || !ok {
		return "another agent"
	}
	return displayName(a)
}

func displayName(a core.Agent) string {
	if strings.TrimSpace(a.Name) != "" {
		return a.Name
	}
	local, _, _ := strings.Cut(a.Email, "@")
	return local
}
