package wecom

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/core"
)

const mediaGetURL = DefaultAPIBase + "/cgi-bin/media/get"

// imageBudget bounds fetching an agent's image while Work WeChat waits for
// the callback's answer (5 s).
const imageBudget = 3500 * time.Millisecond

// handle acts on one verified callback. It returns an error only when
// nothing useful was committed and Work WeChat should send it again; every
// other outcome is told to the member as an app message.
func (c *Channel) handle(ctx context.Context, m Message) error {
	if m.MsgType == "event" {
		return nil // entering the app, location reports: nothing to do
	}
	a, ok, err := c.agentByUserID(ctx, m.FromUserName)
	if err != nil {
		return err
	}
	if !ok {
		c.log.Info("wecom: message from a member who is not a kefu agent", "userid", m.FromUserName)
		return c.tell(ctx, m.FromUserName, "Your Work WeChat account ("+m.FromUserName+") is not linked to a kefu agent, so nothing was sent. Ask a kefu admin to set your wecom_userid.")
	}
	if !a.Active {
		return c.tell(ctx, m.FromUserName, "Your kefu account is deactivated, so nothing was sent.")
	}
	switch m.MsgType {
	case "text":
		return c.command(ctx, a, m)
	case "image":
		return c.imageReply(ctx, a, m)
	}
	return c.tell(ctx, a.WeComUserID, "Only text and images reach customers from Work WeChat; nothing was sent.")
}

// dedupKey makes an agent's reply from callback m stored once across Work
// WeChat's retries.
func (c *Channel) dedupKey(m Message) string {
	if m.MsgID == "" {
		return ""
	}
	return core.ProviderKey(c.name, "msg:"+m.MsgID)
}

// command carries out an agent's text message.
func (c *Channel) command(ctx context.Context, a core.Agent, m Message) error {
	cmd := ParseCommand(m.Content)
	to := a.WeComUserID
	switch cmd.Op {
	case OpEmpty:
		return nil
	case OpHelp:
		return c.tell(ctx, to, helpText)
	case OpUsage:
		return c.tell(ctx, to, "Usage: "+cmd.Text)
	case OpUnknown:
		return c.tell(ctx, to, "Unknown command "+cmd.Text+". /help lists the commands; nothing was sent to a customer.")
	case OpOn:
		return c.on(ctx, a)
	case OpOff:
		return c.off(ctx, a)
	case OpList:
		return c.list(ctx, a)
	case OpTake:
		return c.take(ctx, a, cmd.Conv)
	case OpClose:
		return c.closeConv(ctx, a, cmd.Conv)
	case OpTransfer:
		return c.transfer(ctx, a, cmd.Conv, cmd.Who)
	case OpSelect:
		return c.selectCmd(ctx, a, cmd.Conv)
	case OpAnswer:
		_, err := c.answer(ctx, a, cmd.Conv, core.Message{Kind: core.KindText, Text: cmd.Text, DedupKey: c.dedupKey(m)}, true)
		return err
	default: // OpReply
		conv, problem, err := c.target(ctx, a)
		if err != nil {
			return err
		}
		if problem != "" {
			return c.tell(ctx, to, problem)
		}
		_, err = c.answer(ctx, a, conv.ID, core.Message{Kind: core.KindText, Text: cmd.Text, DedupKey: c.dedupKey(m)}, false)
		return err
	}
}

// answer sends msg to conversation convID as a's reply, through the
// console's path (core.Service.Reply), and selects it when sel is set.
func (c *Channel) answer(ctx context.Context, a core.Agent, convID int64, msg core.Message, sel bool) (core.Message, error) {
	conv, err := c.store.Conversation(ctx, convID)
	if errors.Is(err, core.ErrNotFound) {
		return core.Message{}, c.tell(ctx, a.WeComUserID, fmt.Sprintf("There is no conversation #%d; nothing was sent.", convID))
	}
	if err != nil {
		return core.Message{}, err
	}
	if !mayAnswer(a, conv) {
		return core.Message{}, c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is handled by %s; nothing was sent.", convID, c.assigneeName(ctx, conv.AssigneeID)))
	}
	stored, err := c.svc.ReplyAsOwner(ctx, a.ID, convID, msg)
	if errors.Is(err, core.ErrConflict) {
		// Taken by someone else while the reply was on its way.
		if cur, rerr := c.store.Conversation(ctx, convID); rerr == nil && !mayAnswer(a, cur) {
			return core.Message{}, c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d was just taken by %s; nothing was sent.", convID, c.assigneeName(ctx, cur.AssigneeID)))
		}
	}
	switch {
	case errors.Is(err, core.ErrWindowClosed):
		ends := c.svc.WindowEnds(conv)
		return core.Message{}, c.tell(ctx, a.WeComUserID, fmt.Sprintf("%s: the customer's app only accepts replies for a while after their last message, and that ended at %s. Nothing was sent; the customer must write first.",
			c.label(ctx, conv), ends.Local().Format("2006-01-02 15:04")))
	case errors.Is(err, core.ErrInvalid), errors.Is(err, core.ErrForbidden), errors.Is(err, core.ErrConflict):
		return core.Message{}, c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d: %s. Nothing was sent.", convID, err))
	case err != nil:
		return core.Message{}, err
	}
	if sel {
		return stored, c.selectConv(ctx, a.ID, convID, true)
	}
	if conv.AssigneeID == 0 {
		// The plain reply took the selected waiting conversation.
		return stored, c.markMine(ctx, a.ID, convID)
	}
	return stored, nil
}

// imageReply sends an agent's image to the conversation a plain reply
// would go to.
func (c *Channel) imageReply(ctx context.Context, a core.Agent, m Message) error {
	conv, problem, err := c.target(ctx, a)
	if err != nil {
		return err
	}
	if problem != "" {
		return c.tell(ctx, a.WeComUserID, problem)
	}
	fctx, cancel := context.WithTimeout(ctx, imageBudget)
	med, err := c.fetchImage(fctx, m)
	cancel()
	if err != nil {
		c.log.Warn("wecom: agent's image not fetched", "err", err)
		return c.tell(ctx, a.WeComUserID, "Your image could not be fetched from Work WeChat; nothing was sent. Please send it again.")
	}
	stored, err := c.answer(ctx, a, conv.ID, core.Message{Kind: core.KindImage, Media: &med, DedupKey: c.dedupKey(m)}, false)
	// The file stays only as the stored reply's: not when the reply was
	// refused (the agent was told) or was Work WeChat's retry of one
	// stored before, with its own copy. After an error the reply may
	// still have been stored, so the file stays then too.
	if err == nil && (stored.Media == nil || stored.Media.Key != med.Key) {
		c.discard(med)
	}
	return err
}

func (c *Channel) fetchImage(ctx context.Context, m Message) (core.Media, error) {
	var med core.Media
	err := errors.New("no media id")
	if m.MediaID != "" && len(m.MediaID) <= 256 {
		err = c.tokens.Do(ctx, func(tok string) error {
			var ferr error
			med, ferr = wxapi.FetchMedia(ctx, "media/get", c.media, mediaGetURL+"?access_token="+url.QueryEscape(tok)+"&media_id="+url.QueryEscape(m.MediaID), "")
			return ferr
		})
	}
	if err != nil && imageHost(m.PicURL) {
		req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, m.PicURL, nil)
		if rerr == nil {
			return c.media.Fetch(ctx, wxapi.Client(), req, "")
		}
	}
	return med, err
}

// imageHost reports whether u is on Work WeChat's image hosts, the only
// place kefu fetches an agent's image from besides the media API.
func imageHost(u string) bool {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.User != nil || p.Port() != "" {
		return false
	}
	h := strings.ToLower(p.Hostname())
	return strings.HasSuffix(h, ".qpic.cn") || strings.HasSuffix(h, ".qlogo.cn")
}

func (c *Channel) discard(m core.Media) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.media.Delete(ctx, m.Key)
}

func (c *Channel) queueLen(ctx context.Context) (int, error) {
	q, err := c.store.Queue(ctx, 1000)
	return len(q), err
}

// on makes a available (/on; it ends away too) and says how many
// conversations wait, and how many of them came to a.
func (c *Channel) on(ctx context.Context, a core.Agent) error {
	before, err := c.queueLen(ctx)
	if err != nil {
		return err
	}
	open, err := c.store.OpenCounts(ctx)
	if err != nil {
		return err
	}
	if err := c.svc.SetOn(ctx, a.ID, true); err != nil {
		return err
	}
	after, err := c.queueLen(ctx)
	if err != nil {
		return err
	}
	now, err := c.store.OpenCounts(ctx)
	if err != nil {
		return err
	}
	// Others' conversations come and go meanwhile: count a's own.
	mine := max(now[a.ID]-open[a.ID], 0)
	msg := "You are on: new conversations will be assigned to you. No conversation is waiting."
	switch {
	case mine > 0:
		msg = fmt.Sprintf("You are on: new conversations will be assigned to you. %d waiting conversation(s) assigned to you now, %d still waiting.",
			mine, after)
	case after > 0:
		msg = fmt.Sprintf("You are on: new conversations will be assigned to you. %d conversation(s) are waiting (/list, /take 123).", after)
	case before > 0:
		msg = "You are on: new conversations will be assigned to you. No conversation is waiting now."
	}
	return c.tell(ctx, a.WeComUserID, msg)
}

// off makes a away (/off).
func (c *Channel) off(ctx context.Context, a core.Agent) error {
	if err := c.svc.SetOn(ctx, a.ID, false); err != nil {
		return err
	}
	open, err := c.store.Conversations(ctx, core.ConversationFilter{AssigneeID: a.ID, Statuses: []core.ConversationStatus{core.StatusOpen}, Limit: 500})
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("You are off: no new conversations will be assigned to you. Your %d open conversation(s) stay yours.", len(open))
	if c.svc.Presence().Connected(a.ID) {
		msg += " You are still signed in to the console, which keeps you available there."
	}
	return c.tell(ctx, a.WeComUserID, msg)
}

// list answers /list: a's open conversations, and the queue.
func (c *Channel) list(ctx context.Context, a core.Agent) error {
	open, err := c.store.Conversations(ctx, core.ConversationFilter{AssigneeID: a.ID, Statuses: []core.ConversationStatus{core.StatusOpen}, Limit: 20})
	if err != nil {
		return err
	}
	queue, err := c.store.Queue(ctx, 1000)
	if err != nil {
		return err
	}
	var b strings.Builder
	if len(open) == 0 {
		b.WriteString("You have no open conversation.")
	} else {
		ids := make([]int64, len(open))
		for i, o := range open {
			ids[i] = o.ID
		}
		last, err := c.store.LastMessages(ctx, ids)
		if err != nil {
			return err
		}
		slices.SortFunc(open, func(x, y core.Conversation) int { return int(x.ID - y.ID) })
		b.WriteString("Your open conversations:")
		for _, o := range open {
			b.WriteString("\n" + c.label(ctx, o))
			if m, ok := last[o.ID]; ok {
				b.WriteString(": " + snippet(m, 40))
			}
		}
	}
	if sel, err := c.loadSelection(ctx, a.ID); err == nil && sel.Conv != 0 {
		fmt.Fprintf(&b, "\nSelected for plain replies: #%d", sel.Conv)
	}
	if len(queue) == 0 {
		b.WriteString("\nNo conversation is waiting.")
	} else {
		fmt.Fprintf(&b, "\nWaiting in the queue: %d", len(queue))
		for i, q := range queue {
			if i == 5 {
				b.WriteString("\n…")
				break
			}
			b.WriteString("\n" + c.label(ctx, q))
		}
		b.WriteString("\n/take 123 takes one.")
	}
	avail, err := c.svc.Presence().Available(ctx)
	if err == nil {
		if slices.Contains(avail, a.ID) {
			b.WriteString("\nYou are on.")
		} else {
			b.WriteString("\nYou are off (/on to get new conversations).")
		}
	}
	return c.tell(ctx, a.WeComUserID, b.String())
}

// take answers /take 123.
func (c *Channel) take(ctx context.Context, a core.Agent, n int64) error {
	conv, err := c.store.Conversation(ctx, n)
	if errors.Is(err, core.ErrNotFound) {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("There is no conversation #%d.", n))
	}
	if err != nil {
		return err
	}
	switch {
	case conv.Status == core.StatusResolved:
		// Not selected: a plain reply must not reopen it unasked.
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is closed; a reply (#%d text) reopens it.", n, n))
	case conv.AssigneeID == a.ID:
		if err := c.selectConv(ctx, a.ID, n, true); err != nil {
			return err
		}
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("%s is already yours; plain replies now go there.", c.label(ctx, conv)))
	case conv.AssigneeID != 0:
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is handled by %s.", n, c.assigneeName(ctx, conv.AssigneeID)))
	}
	if _, err := c.svc.Take(ctx, a.ID, n); err != nil {
		if errors.Is(err, core.ErrConflict) {
			cur, rerr := c.store.Conversation(ctx, n)
			if rerr != nil {
				return rerr
			}
			return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d was just taken by %s.", n, c.assigneeName(ctx, cur.AssigneeID)))
		}
		if errors.Is(err, core.ErrForbidden) {
			return c.tell(ctx, a.WeComUserID, err.Error())
		}
		return err
	}
	if err := c.selectConv(ctx, a.ID, n, true); err != nil {
		return err
	}
	return c.tell(ctx, a.WeComUserID, fmt.Sprintf("%s is yours now; plain replies go there.", c.label(ctx, conv)))
}

// closeConv answers /close [123]. Agents close their own conversations and
// waiting ones; admins close any.
func (c *Channel) closeConv(ctx context.Context, a core.Agent, n int64) error {
	var conv core.Conversation
	var err error
	if n == 0 {
		var problem string
		conv, problem, err = c.target(ctx, a)
		if err != nil {
			return err
		}
		if problem != "" {
			return c.tell(ctx, a.WeComUserID, strings.Replace(problem, "Nothing was sent", "Nothing was closed", 1))
		}
		n = conv.ID
	} else if conv, err = c.store.Conversation(ctx, n); errors.Is(err, core.ErrNotFound) {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("There is no conversation #%d.", n))
	} else if err != nil {
		return err
	}
	if !mayAnswer(a, conv) && a.Role != core.RoleAdmin {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is handled by %s; only they or an admin may close it.", n, c.assigneeName(ctx, conv.AssigneeID)))
	}
	if _, err := c.svc.Close(ctx, a.ID, n); err != nil {
		switch {
		case errors.Is(err, core.ErrConflict):
			return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is already closed.", n))
		case errors.Is(err, core.ErrForbidden):
			return c.tell(ctx, a.WeComUserID, err.Error())
		}
		return err
	}
	if err := c.unselect(ctx, a.ID, n); err != nil {
		return err
	}
	return c.tell(ctx, a.WeComUserID, fmt.Sprintf("Closed %s.", c.label(ctx, conv)))
}

// transfer answers /transfer 123 bob.
func (c *Channel) transfer(ctx context.Context, a core.Agent, n int64, who string) error {
	to, problem, err := c.findAgent(ctx, a, who)
	if err != nil {
		return err
	}
	if problem != "" {
		return c.tell(ctx, a.WeComUserID, problem)
	}
	if cur, err := c.store.Conversation(ctx, n); err == nil && cur.AssigneeID == to.ID && cur.Status != core.StatusResolved {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is already with %s.", n, displayName(to)))
	}
	conv, err := c.svc.Transfer(ctx, a.ID, n, to.ID)
	switch {
	case errors.Is(err, core.ErrNotFound):
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("There is no conversation #%d.", n))
	case errors.Is(err, core.ErrForbidden):
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("Only the agent handling #%d or an admin may transfer it (%s).", n, err))
	case errors.Is(err, core.ErrConflict):
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d changed meanwhile (or is closed); nothing was transferred.", n))
	case err != nil:
		return err
	}
	if to.ID == a.ID {
		err = c.selectConv(ctx, a.ID, n, true)
	} else {
		err = c.unselect(ctx, a.ID, n)
	}
	if err != nil {
		return err
	}
	return c.tell(ctx, a.WeComUserID, fmt.Sprintf("%s is now with %s.", c.label(ctx, conv), displayName(to)))
}

// findAgent resolves /transfer's target: "me"; an email; the part of an
// email before "@"; or a name, case-insensitively. Only active agents
// count. A name that fits several agents is refused with their emails.
func (c *Channel) findAgent(ctx context.Context, me core.Agent, who string) (core.Agent, string, error) {
	if strings.EqualFold(who, "me") {
		return me, "", nil
	}
	as, err := c.agentsList(ctx)
	if err != nil {
		return core.Agent{}, "", err
	}
	match := func(f func(core.Agent) bool) []core.Agent {
		var out []core.Agent
		for _, x := range as {
			if x.Active && f(x) {
				out = append(out, x)
			}
		}
		return out
	}
	for _, f := range []func(core.Agent) bool{
		func(x core.Agent) bool { return strings.EqualFold(x.Email, who) },
		func(x core.Agent) bool { l, _, _ := strings.Cut(x.Email, "@"); return strings.EqualFold(l, who) },
		func(x core.Agent) bool { return strings.EqualFold(strings.TrimSpace(x.Name), who) },
	} {
		switch got := match(f); len(got) {
		case 0:
			continue
		case 1:
			return got[0], "", nil
		default:
			emails := make([]string, len(got))
			for i, x := range got {
				emails[i] = x.Email
			}
			return core.Agent{}, fmt.Sprintf("%q fits several agents (%s); use the email. Nothing was transferred.", who, strings.Join(emails, ", ")), nil
		}
	}
	return core.Agent{}, fmt.Sprintf("No active agent is called %q. Nothing was transferred.", who), nil
}

// selectCmd answers "#123" alone.
func (c *Channel) selectCmd(ctx context.Context, a core.Agent, n int64) error {
	conv, err := c.store.Conversation(ctx, n)
	if errors.Is(err, core.ErrNotFound) {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("There is no conversation #%d.", n))
	}
	if err != nil {
		return err
	}
	if !mayAnswer(a, conv) {
		return c.tell(ctx, a.WeComUserID, fmt.Sprintf("#%d is handled by %s; it was not selected.", n, c.assigneeName(ctx, conv.AssigneeID)))
	}
	if err := c.selectConv(ctx, a.ID, n, conv.AssigneeID == a.ID); err != nil {
		return err
	}
	extra := ""
	if conv.AssigneeID == 0 {
		extra = " It is waiting in the queue: your first reply takes it."
	}
	return c.tell(ctx, a.WeComUserID, fmt.Sprintf("Selected %s: plain replies go there.%s", c.label(ctx, conv), extra))
}

// snippet is a short one-line rendering of m for lists.
func snippet(m core.Message, n int) string {
	s := describeContent(m)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n]) + "…"
	}
	return s
}
