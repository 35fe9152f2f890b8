package slack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// Limits on what is posted, in bytes of text. Slack cuts messages at 40,000
// characters and advises under 4,000; the console always has the whole
// message.
const (
	maxQuote = 3000 // the first message, quoted in the parent
	maxPost  = 3900 // a message in the thread
)

// metadataType marks the parent messages kefu posts (Slack message
// metadata), so that a parent posted just before a crash can be found again.
const metadataType = "kefu_conversation"

// ConsoleURL is the link to a conversation in the console:
// {public_url}/console/#/conversations/{id}. Empty without a public URL.
func ConsoleURL(publicURL string, convID int64) string {
	if publicURL == "" {
		return ""
	}
	return strings.TrimRight(publicURL, "/") + "/console/#/conversations/" + strconv.FormatInt(convID, 10)
}

// Follow implements bridge.FollowHandler: it mirrors one message of the
// log into Slack. The first mirrored message of a conversation posts the
// parent; the others go into its thread. A nil error means the message is
// in Slack (or is not mirrored); any other error is transient and the
// follower retries the same message, except bridge.Permanent ones (Slack
// refuses this message), which are skipped.
//
// Follow is idempotent for what the follower may hand over again after a
// crash: the mapping is checked first, and it records the last message
// mirrored into each thread.
func (c *Channel) Follow(ctx context.Context, m core.Message, conv core.Conversation) error {
	if !c.mirrors(m) {
		return nil
	}
	th, st, since, err := c.loadThread(ctx, conv.ID)
	if err != nil {
		return err
	}
	if st == threadPending {
		// A parent may have been posted before a crash: look for it.
		found, ok, err := c.findParent(ctx, conv.ID, since)
		if err != nil {
			return classify(err)
		}
		if ok {
			th, st = found, threadMapped
			if err := c.saveThread(ctx, conv.ID, th, true); err != nil {
				return err
			}
		}
	}
	if st != threadMapped || th.Channel != c.cfg.Channel {
		if th, err = c.postParent(ctx, m, conv); err != nil {
			return err
		}
	}
	if m.ID <= th.Last {
		return nil // already in the thread (or quoted in the parent)
	}
	if m.Kind == core.KindEvent {
		// Keep the parent's assignee and status current. Best effort: the
		// thread says it anyway.
		if err := c.updateParent(ctx, th, conv); err != nil {
			if err = classify(err); !isPermanent(err) {
				return err
			}
			c.log.Warn("slack: updating the parent failed", "conversation", conv.ID, "err", err)
		}
	}
	text, err := c.threadText(ctx, m, conv)
	if err != nil {
		return err
	}
	ts, threaded, err := c.api.post(ctx, c.cfg.Channel, c.msgOptions(text, th.TS)...)
	if err != nil {
		return classify(err)
	}
	isNew := false
	if !threaded {
		// The parent was deleted, so Slack posted this on its own. It
		// becomes the conversation's thread from now on.
		c.log.Warn("slack: the thread's parent is gone; continuing under the last message", "conversation", conv.ID)
		th.TS, isNew = ts, true
	}
	th.Last = m.ID
	return c.saveThread(ctx, conv.ID, th, isNew)
}

func isPermanent(err error) bool {
	var p *bridge.PermanentError
	return errors.As(err, &p)
}

// mirrors reports whether m goes to Slack: everything but what came from
// this Slack instance (agents' thread replies, which are already there)
// and events kefu does not show.
func (c *Channel) mirrors(m core.Message) bool {
	if strings.HasPrefix(m.DedupKey, core.ProviderKey(c.name, "")) {
		return false
	}
	if m.Kind == core.KindEvent {
		if m.Event == nil {
			return false
		}
		switch m.Event.Type {
		case core.EventAssigned, core.EventTransferred, core.EventUnassigned, core.EventResolved, core.EventReopened,
			core.EventDeliveryFailed:
			return true
		}
		return false
	}
	return true
}

// postParent posts a conversation's parent message and stores the mapping.
// When m is a customer message it is quoted in the parent (and counts as
// mirrored).
func (c *Channel) postParent(ctx context.Context, m core.Message, conv core.Conversation) (thread, error) {
	th := thread{Channel: c.cfg.Channel}
	if m.SenderKind == core.SenderContact && m.Kind != core.KindEvent {
		th.First, th.Last = m.ID, m.ID
	}
	text, err := c.parentText(ctx, conv, th.First)
	if err != nil {
		return th, err
	}
	if err := c.markPending(ctx, conv.ID, c.now()); err != nil {
		return th, err
	}
	opts := append(c.msgOptions(text, ""), slack.MsgOptionMetadata(slack.SlackMetadata{
		EventType:    metadataType,
		EventPayload: map[string]any{"conversation_id": conv.ID, "instance": c.name, "quoted_message_id": th.First},
	}))
	ts, _, err := c.api.post(ctx, c.cfg.Channel, opts...)
	if err != nil {
		return th, classify(err)
	}
	th.TS = ts
	return th, c.saveThread(ctx, conv.ID, th, true)
}

// findParent looks through the channel's history since a pending mark for
// the parent kefu posted for convID.
func (c *Channel) findParent(ctx context.Context, convID int64, since time.Time) (thread, bool, error) {
	p := &slack.GetConversationHistoryParameters{
		ChannelID:          c.cfg.Channel,
		Oldest:             strconv.FormatInt(since.Add(-time.Minute).Unix(), 10),
		Limit:              200,
		IncludeAllMetadata: true,
	}
	for page := 0; page < 10; page++ {
		res, err := c.api.history(ctx, p)
		if err != nil {
			return thread{}, false, err
		}
		for _, msg := range res.Messages {
			md := msg.Metadata
			if md.EventType != metadataType || md.EventPayload["instance"] != c.name {
				continue
			}
			if id, ok := md.EventPayload["conversation_id"].(float64); ok && int64(id) == convID {
				// The message quoted in the parent counts as mirrored.
				quoted, _ := md.EventPayload["quoted_message_id"].(float64)
				return thread{Channel: c.cfg.Channel, TS: msg.Timestamp, Last: int64(quoted), First: int64(quoted)}, true, nil
			}
		}
		if !res.HasMore || res.ResponseMetaData.NextCursor == "" {
			break
		}
		p.Cursor = res.ResponseMetaData.NextCursor
	}
	return thread{}, false, nil
}

// updateParent rewrites the parent with the conversation's current
// assignee and status.
func (c *Channel) updateParent(ctx context.Context, th thread, conv core.Conversation) error {
	text, err := c.parentText(ctx, conv, th.First)
	if err != nil {
		return err
	}
	return c.api.update(ctx, th.Channel, th.TS, slack.MsgOptionText(text, false))
}

// msgOptions are the options of every post: text (already mrkdwn), no
// unfurling of customers' links, in threadTS's thread when set.
func (c *Channel) msgOptions(text, threadTS string) []slack.MsgOption {
	opts := []slack.MsgOption{
		slack.MsgOptionText(text, false),
		slack.MsgOptionDisableLinkUnfurl(),
		slack.MsgOptionDisableMediaUnfurl(),
	}
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
	}
	return opts
}

// parentText renders a parent message:
//
//	*#12* · *Zhang San* via telegram
//	> first message
//	Assignee: Alice · Status: open · <link|Open in the console>
func (c *Channel) parentText(ctx context.Context, conv core.Conversation, firstID int64) (string, error) {
	name, err := c.customerName(ctx, conv)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%s* · *%s* via %s", conv.Number(), escape(name), escape(conv.Channel))
	if firstID > 0 {
		first, err := c.store.Message(ctx, firstID)
		if err != nil && !errors.Is(err, core.ErrNotFound) {
			return "", err
		}
		if err == nil {
			b.WriteString("\n" + quote(truncate(escape(content(first)), maxQuote)))
		}
	}
	assignee := "nobody yet"
	if conv.AssigneeID != 0 {
		if assignee, err = c.agentName(ctx, conv.AssigneeID, false); err != nil {
			return "", err
		}
	}
	status := map[core.ConversationStatus]string{
		core.StatusPending: "waiting", core.StatusOpen: "open", core.StatusResolved: "closed",
	}[conv.Status]
	fmt.Fprintf(&b, "\nAssignee: %s · Status: %s", assignee, status)
	if u := ConsoleURL(c.publicURL, conv.ID); u != "" {
		fmt.Fprintf(&b, " · <%s|Open in the console>", u)
	}
	b.WriteString("\n_Reply in this thread to answer the customer; start with `note:` for an internal note._")
	return b.String(), nil
}

// threadText renders one message for the thread.
func (c *Channel) threadText(ctx context.Context, m core.Message, conv core.Conversation) (string, error) {
	if m.Kind == core.KindEvent {
		return c.eventText(ctx, m)
	}
	body := truncate(escape(content(m)), maxPost)
	switch {
	case m.SenderKind == core.SenderContact:
		name, err := c.customerName(ctx, conv)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("*%s:* %s", escape(name), body), nil
	case m.SenderKind == core.SenderAgent && m.Visibility == core.Internal:
		name, err := c.agentName(ctx, m.SenderID, false)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf(":memo: Note by %s: %s", name, body), nil
	case m.SenderKind == core.SenderAgent:
		name, err := c.agentName(ctx, m.SenderID, false)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s (agent): %s", name, body), nil
	default:
		return "_Automatic reply:_ " + body, nil
	}
}

// eventText renders an assignment or status event.
func (c *Channel) eventText(ctx context.Context, m core.Message) (string, error) {
	e := m.Event
	name := func(id int64, mention bool) (string, error) { return c.agentName(ctx, id, mention) }
	by := ""
	if e.ByID != 0 {
		n, err := name(e.ByID, false)
		if err != nil {
			return "", err
		}
		by = " by " + n
	}
	switch e.Type {
	case core.EventAssigned:
		n, err := name(e.AgentID, true)
		if err != nil {
			return "", err
		}
		return ":arrow_right: Assigned to " + n + by, nil
	case core.EventTransferred:
		to, err := name(e.AgentID, true)
		if err != nil {
			return "", err
		}
		from, err := name(e.FromID, false)
		if err != nil {
			return "", err
		}
		return ":arrow_right: Transferred from " + from + " to " + to + by, nil
	case core.EventUnassigned:
		return ":inbox_tray: Back in the queue" + by, nil
	case core.EventResolved:
		return ":white_check_mark: Closed" + by, nil
	case core.EventReopened:
		if e.ByID == 0 {
			by = " (the customer wrote again)"
		}
		return ":repeat: Reopened" + by, nil
	case core.EventDeliveryFailed:
		who := "An automatic reply"
		if e.AgentID != 0 {
			n, err := name(e.AgentID, true)
			if err != nil {
				return "", err
			}
			who = n + "'s reply"
		}
		return ":warning: " + who + " was not delivered to the customer: " + truncate(escape(m.Text), maxPost), nil
	}
	return "", fmt.Errorf("slack: unexpected event %q", e.Type)
}

// content is a message's text for Slack, plain (not yet escaped).
func content(m core.Message) string {
	switch m.Kind {
	case core.KindText:
		return m.Text
	case core.KindImage, core.KindFile:
		what := "an image"
		if m.Kind == core.KindFile {
			what = "a file"
		}
		s := "[" + what
		if m.Media != nil && m.Media.Name != "" {
			s += ": " + m.Media.Name
		}
		s += "; open it in the console]"
		if m.Text != "" {
			s = m.Text + "\n" + s
		}
		return s
	case core.KindTemplate:
		return "[template " + m.Text + "]"
	}
	return m.Text
}

// customerName is the conversation's contact's name, or a stand-in.
func (c *Channel) customerName(ctx context.Context, conv core.Conversation) (string, error) {
	ct, err := c.store.Contact(ctx, conv.ContactID)
	if err != nil && !errors.Is(err, core.ErrNotFound) {
		return "", err
	}
	if n := strings.TrimSpace(ct.Name); n != "" {
		return n, nil
	}
	return "Customer " + conv.Number(), nil
}

// agentName is an agent's name (escaped) or, with mention set and the agent
// mapped to a Slack user, a mention that notifies them.
func (c *Channel) agentName(ctx context.Context, id int64, mention bool) (string, error) {
	a, err := c.store.Agent(ctx, id)
	if errors.Is(err, core.ErrNotFound) {
		return "agent " + strconv.FormatInt(id, 10), nil
	}
	if err != nil {
		return "", err
	}
	if mention && a.SlackUser != "" {
		return "<@" + a.SlackUser + ">", nil
	}
	if a.Name != "" {
		return "*" + escape(a.Name) + "*", nil
	}
	return escape(a.Email), nil
}
