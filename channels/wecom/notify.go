package wecom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
)

// note is one app message to a member: the payload of an outbox entry.
type note struct {
	To    string      `json:"to"`              // the member's userid
	Text  string      `json:"text,omitempty"`  // a text message
	Media *core.Media `json:"media,omitempty"` // or an image from kefu's media storage
}

// maxText is the most bytes put in one text app message (Work WeChat takes
// 2048; longer texts are split).
const maxText = 2000

// maxBacklogImages bounds the images an assignment notification sends.
const maxBacklogImages = 3

// knownNames are display names for customer channel instances named after
// their type, as they usually are.
var knownNames = map[string]string{
	"web": "Web", "wechat": "WeChat", "whatsapp": "WhatsApp", "telegram": "Telegram",
	"webhook": "Webhook", "app": "App", "ios": "App",
}

// channelName is how agents see a customer channel instance.
func (c *Channel) channelName(instance string) string {
	if n, ok := c.cfg.ChannelNames[instance]; ok {
		return n
	}
	if n, ok := knownNames[instance]; ok {
		return n
	}
	return instance
}

// label is a conversation as notifications name it: "#123 WeChat · 张三".
func (c *Channel) label(ctx context.Context, conv core.Conversation) string {
	who := ""
	if ct, err := c.store.Contact(ctx, conv.ContactID); err == nil {
		who = strings.Join(strings.Fields(ct.Name), " ")
	}
	if who == "" {
		who = fmt.Sprintf("customer %d", conv.ContactID)
	}
	return fmt.Sprintf("#%d %s · %s", conv.ID, c.channelName(conv.Channel), truncate(who, 64))
}

// describeContent renders a message's content as text: its text, or what
// it holds.
func describeContent(m core.Message) string {
	switch m.Kind {
	case core.KindText:
		return m.Text
	case core.KindImage:
		return strings.TrimSpace("[image] " + m.Text)
	case core.KindFile:
		what := "[file]"
		if m.Media != nil {
			switch {
			case strings.HasPrefix(m.Media.Type, "audio/"):
				what = "[voice]"
			case strings.HasPrefix(m.Media.Type, "video/"):
				what = "[video]"
			case m.Media.Name != "":
				what = "[file " + m.Media.Name + "]"
			}
		}
		return strings.TrimSpace(what + " " + m.Text)
	case core.KindTemplate:
		return "[template " + m.Text + "]"
	}
	return ""
}

// textNotes splits text into app messages to member to, each at most
// maxText bytes, each after the first starting with prefix.
func textNotes(to, prefix, text string) []note {
	var out []note
	first := true
	for {
		p := ""
		if !first {
			p = prefix
		}
		room := maxText - len(p)
		if len(text) <= room {
			return append(out, note{To: to, Text: p + text})
		}
		cut := room
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if nl := strings.LastIndexByte(text[:cut], '\n'); nl > room/2 {
			cut = nl + 1
		}
		out = append(out, note{To: to, Text: p + text[:cut]})
		text, first = text[cut:], false
	}
}

// tell sends text to member to (an answer to a command, or a refusal).
func (c *Channel) tell(ctx context.Context, to, text string) error {
	return c.enqueue(ctx, textNotes(to, "", text)...)
}

// enqueue commits notes to this channel's outbox, one entry each, keyed
// per member so that each member's messages go out in order, and kicks
// delivery.
func (c *Channel) enqueue(ctx context.Context, notes ...note) error {
	for _, n := range notes {
		payload, err := json.Marshal(n)
		if err != nil {
			return err
		}
		e, err := c.store.Enqueue(ctx, core.OutboxEntry{Channel: c.name, Key: "u:" + strings.ToLower(n.To), Payload: payload, CreatedAt: c.now()})
		if err != nil {
			return err
		}
		if c.kicker != nil {
			c.kicker.Deliver(ctx, e)
		}
	}
	return nil
}

// Follow implements bridge.FollowHandler: it is handed every message and
// event of every conversation, in ID order, at least once, and notifies
// the agents concerned.
func (c *Channel) Follow(ctx context.Context, m core.Message, conv core.Conversation) error {
	if m.Kind == core.KindEvent {
		if m.Event == nil {
			return nil
		}
		return c.followEvent(ctx, m, conv)
	}
	if m.SenderKind != core.SenderContact || m.Visibility != core.Public {
		return nil
	}
	return c.followCustomer(ctx, m, conv)
}

// wecomAgent returns the agent with id when they can be notified: active,
// with a wecom_userid.
func (c *Channel) wecomAgent(ctx context.Context, id int64) (core.Agent, bool, error) {
	if id == 0 {
		return core.Agent{}, false, nil
	}
	a, ok, err := c.agentByID(ctx, id)
	if err != nil || !ok || !a.Active || a.WeComUserID == "" {
		return core.Agent{}, false, err
	}
	return a, true, nil
}

// followCustomer notifies the agent handling conv of a customer message.
// The agent is the one who had the conversation when the message came: a
// message that came while it waited is shown when it is assigned (with
// the backlog), not twice.
func (c *Channel) followCustomer(ctx context.Context, m core.Message, conv core.Conversation) error {
	owner, err := c.assigneeAt(ctx, m, conv)
	if err != nil {
		return err
	}
	a, ok, err := c.wecomAgent(ctx, owner)
	if err != nil || !ok {
		return err
	}
	st, err := c.loadSeen(ctx, a.ID)
	if err != nil {
		return err
	}
	if m.ID <= st.Max || m.ID < st.Conv[conv.ID] {
		return nil // handled before a restart, or shown in a backlog
	}
	label := "[" + c.label(ctx, conv) + "] "
	notes := textNotes(a.WeComUserID, label, label+describeContent(m))
	if m.Kind == core.KindImage && m.Media != nil {
		notes = append(notes, note{To: a.WeComUserID, Media: m.Media})
	}
	return c.notifyShown(ctx, a.ID, st, conv.ID, m.ID, notes)
}

// notifyShown sends an agent notes that show them conversation conv up to
// message id, and records it in st. What the agent is shown is saved before
// the notes are queued: once they can read them, a plain reply must already
// know about them (target asks "which conversation?" rather than guess).
// That id was handled (Max) is saved after, so that a crash in between
// notifies again rather than never.
func (c *Channel) notifyShown(ctx context.Context, agentID int64, st seen, conv, id int64, notes []note) error {
	st.record(conv, id)
	if err := c.saveSeen(ctx, agentID, st); err != nil {
		return err
	}
	if err := c.enqueue(ctx, notes...); err != nil {
		return err
	}
	st.Max = id
	return c.saveSeen(ctx, agentID, st)
}

// assigneeAt returns who handled conv when m came: the current assignee,
// unless an assignment change after m says otherwise.
func (c *Channel) assigneeAt(ctx context.Context, m core.Message, conv core.Conversation) (int64, error) {
	if conv.LastSeq <= m.Seq {
		return conv.AssigneeID, nil
	}
	later, err := c.store.Messages(ctx, core.MessageQuery{ConversationID: conv.ID, AfterSeq: m.Seq, Limit: 200})
	if err != nil {
		return 0, err
	}
	for _, l := range later {
		if l.Kind != core.KindEvent || l.Event == nil {
			continue
		}
		switch l.Event.Type {
		case core.EventAssigned, core.EventTransferred, core.EventUnassigned:
			return l.Event.FromID, nil
		}
	}
	return conv.AssigneeID, nil
}

func (c *Channel) followEvent(ctx context.Context, m core.Message, conv core.Conversation) error {
	ev := m.Event
	switch ev.Type {
	case core.EventAssigned, core.EventTransferred:
		if err := c.notifyAssigned(ctx, m, conv); err != nil {
			return err
		}
		if ev.Type == core.EventTransferred && ev.FromID != ev.ByID {
			return c.notifyAside(ctx, m, conv, ev.FromID, "transferred to "+c.assigneeName(ctx, ev.AgentID)+" by "+c.byName(ctx, ev.ByID))
		}
	case core.EventUnassigned:
		if ev.FromID != ev.ByID {
			return c.notifyAside(ctx, m, conv, ev.FromID, "put back in the queue by "+c.byName(ctx, ev.ByID))
		}
	case core.EventResolved:
		if conv.AssigneeID != ev.ByID {
			return c.notifyAside(ctx, m, conv, conv.AssigneeID, "closed by "+c.byName(ctx, ev.ByID))
		}
	case core.EventDeliveryFailed:
		// The author learns that the customer did not get their reply
		// (from here or from the console); a bot's goes to the assignee.
		to := ev.AgentID
		if to == 0 {
			to = conv.AssigneeID
		}
		what := "a reply was NOT delivered to the customer: " + m.Text
		if r, ok, err := c.failedReply(ctx, m); err != nil {
			return err
		} else if ok {
			what += "\n> " + truncate(describeContent(r), 200)
		}
		return c.notifyAside(ctx, m, conv, to, what)
	}
	return nil
}

// failedReply reads the reply a delivery_failed event m reports.
func (c *Channel) failedReply(ctx context.Context, m core.Message) (core.Message, bool, error) {
	id, ok := core.FailedMessageID(m)
	if !ok {
		return core.Message{}, false, nil
	}
	r, err := c.store.Message(ctx, id)
	if errors.Is(err, core.ErrNotFound) {
		return r, false, nil
	}
	return r, err == nil, err
}

func (c *Channel) byName(ctx context.Context, id int64) string {
	if id == 0 {
		return "kefu"
	}
	a, ok, err := c.agentByID(ctx, id)
	if err != nil || !ok {
		return "another agent"
	}
	return displayName(a)
}

// notifyAssigned tells the agent a conversation was assigned or
// transferred to, with the customer messages they have not been shown.
func (c *Channel) notifyAssigned(ctx context.Context, m core.Message, conv core.Conversation) error {
	ev := m.Event
	a, ok, err := c.wecomAgent(ctx, ev.AgentID)
	if err != nil || !ok {
		return err
	}
	st, err := c.loadSeen(ctx, a.ID)
	if err != nil || m.ID <= st.Max {
		return err
	}
	how := "assigned to you"
	switch {
	case ev.ByID == a.ID:
		how = "you took it"
	case ev.Type == core.EventTransferred:
		how = "transferred to you by " + c.byName(ctx, ev.ByID)
	case ev.ByID != 0:
		how = "assigned to you by " + c.byName(ctx, ev.ByID)
	}
	earlier, err := c.store.Messages(ctx, core.MessageQuery{ConversationID: conv.ID, BeforeSeq: m.Seq, Limit: 100})
	if err != nil {
		return err
	}
	// What the agent was shown of conv. At or past m itself only when a
	// crash came between notifyShown's two saves: show the backlog again.
	shown := st.Conv[conv.ID]
	if shown >= m.ID {
		shown = 0
	}
	var backlog []core.Message
	for _, e := range earlier {
		if e.SenderKind == core.SenderContact && e.Visibility == core.Public && e.ID > shown {
			backlog = append(backlog, e)
		}
	}
	label := "[" + c.label(ctx, conv) + "] "
	var b strings.Builder
	b.WriteString(label + how)
	if skipped := len(backlog) - backlogSize; skipped > 0 {
		fmt.Fprintf(&b, "\n(%d earlier message(s) not shown)", skipped)
		backlog = backlog[skipped:]
	}
	if len(backlog) > 0 {
		b.WriteString(", waiting:")
	}
	var images []note
	for _, e := range backlog {
		b.WriteString("\n› " + truncate(describeContent(e), 500))
		if e.Kind == core.KindImage && e.Media != nil && len(images) < maxBacklogImages {
			images = append(images, note{To: a.WeComUserID, Media: e.Media})
		}
	}
	return c.notifyShown(ctx, a.ID, st, conv.ID, m.ID, append(textNotes(a.WeComUserID, label, b.String()), images...))
}

// notifyAside tells agent id about a change to a conversation they had
// (moved away, closed by someone else). It does not count as a
// notification for choosing a plain reply's conversation.
func (c *Channel) notifyAside(ctx context.Context, m core.Message, conv core.Conversation, id int64, what string) error {
	a, ok, err := c.wecomAgent(ctx, id)
	if err != nil || !ok {
		return err
	}
	st, err := c.loadSeen(ctx, a.ID)
	if err != nil || m.ID <= st.Max {
		return err
	}
	if err := c.tell(ctx, a.WeComUserID, "["+c.label(ctx, conv)+"] "+what); err != nil {
		return err
	}
	st.Max = m.ID
	return c.saveSeen(ctx, a.ID, st)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
