package web

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Conversations and their messages. Every agent sees every conversation
// (one deployment serves one company); what they may do to one is core's
// rule.

const (
	// apiDefaultConversations and apiMaxConversations bound a page of
	// the conversation list.
	apiDefaultConversations = 50
	apiMaxConversations     = 500
	// apiDefaultMessages and apiMaxMessages bound a page of history.
	apiDefaultMessages = 100
	apiMaxMessages     = 500
	// apiPreviewRunes is how much of a message's text a list shows.
	apiPreviewRunes = 140
	// apiMaxClientID is the longest client_id.
	apiMaxClientID = 64
	// apiMaxTemplateName bounds a template name.
	apiMaxTemplateName = 200
)

// apiConversationView is a conversation as the API shows it, with what a list
// needs to show it.
type apiConversationView struct {
	ID          int64                   `json:"id"`
	Number      string                  `json:"number"` // "#123", as every channel shows it
	Status      core.ConversationStatus `json:"status"`
	Channel     string                  `json:"channel"`
	Contact     apiContactRef           `json:"contact"`
	Assignee    *apiAgentRef            `json:"assignee"` // null: in the queue
	LastSeq     int64                   `json:"last_seq"`
	LastMessage *apiMessagePreview      `json:"last_message"` // null: none yet
	// LastInboundAt is when the customer last wrote; reply windows run
	// from it.
	LastInboundAt *time.Time `json:"last_inbound_at"`
	// WindowEnds is when the channel's reply window closes (WhatsApp 24 h,
	// WeChat 48 h after LastInboundAt); null for channels without one.
	// After it, only a template (kind "template") reaches the customer.
	WindowEnds *time.Time `json:"window_ends"`
	// Unread counts the customer's messages no agent has read yet (see
	// the read marker) since the last reply to them, among the
	// conversation's newest core.UnreadScan entries.
	Unread     int        `json:"unread"`
	QueuedAt   *time.Time `json:"queued_at"`
	CreatedAt  *time.Time `json:"created_at"`
	UpdatedAt  *time.Time `json:"updated_at"`
	ResolvedAt *time.Time `json:"resolved_at"`
}

type apiContactRef struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

type apiAgentRef struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// apiMessagePreview is the newest message of a conversation that is not an
// event, its text cut to apiPreviewRunes characters.
type apiMessagePreview struct {
	ID         int64            `json:"id"`
	Seq        int64            `json:"seq"`
	SenderKind core.SenderKind  `json:"sender_kind"`
	Visibility core.Visibility  `json:"visibility"`
	Kind       core.ContentKind `json:"kind"`
	Text       string           `json:"text"`
	CreatedAt  *time.Time       `json:"created_at"`
}

// conversationViews enriches conversations for the API in a fixed number
// of store reads, whatever their number: the agents, the contacts, the last
// messages.
func (a *api) conversationViews(ctx context.Context, cs []core.Conversation) ([]apiConversationView, error) {
	out := make([]apiConversationView, len(cs))
	if len(cs) == 0 {
		return out, nil
	}
	agents, err := a.store.Agents(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[int64]string, len(agents))
	for _, ag := range agents {
		names[ag.ID] = ag.Name
	}
	convIDs := make([]int64, len(cs))
	contactIDs := make([]int64, 0, len(cs))
	seen := make(map[int64]bool, len(cs))
	for i, c := range cs {
		convIDs[i] = c.ID
		if !seen[c.ContactID] {
			seen[c.ContactID] = true
			contactIDs = append(contactIDs, c.ContactID)
		}
	}
	contacts, err := a.store.Contacts(ctx, contactIDs)
	if err != nil {
		return nil, err
	}
	contactNames := make(map[int64]string, len(contacts))
	for _, ct := range contacts {
		contactNames[ct.ID] = ct.Name
	}
	last, err := a.store.LastMessages(ctx, convIDs)
	if err != nil {
		return nil, err
	}
	unread, err := a.unreadCounts(ctx, cs, last)
	if err != nil {
		return nil, err
	}
	for i, c := range cs {
		v := apiConversationView{
			ID: c.ID, Number: c.Number(), Status: c.Status, Channel: c.Channel,
			Contact: apiContactRef{ID: c.ContactID, Name: contactNames[c.ContactID]},
			LastSeq: c.LastSeq, LastInboundAt: apiTime(c.LastInboundAt), WindowEnds: a.windowEnds(c),
			Unread: unread[c.ID], QueuedAt: apiTime(c.QueuedAt),
			CreatedAt: apiTime(c.CreatedAt), UpdatedAt: apiTime(c.UpdatedAt), ResolvedAt: apiTime(c.ResolvedAt),
		}
		if c.AssigneeID != 0 {
			v.Assignee = &apiAgentRef{ID: c.AssigneeID, Name: names[c.AssigneeID]}
		}
		if m, ok := last[c.ID]; ok {
			v.LastMessage = &apiMessagePreview{ID: m.ID, Seq: m.Seq, SenderKind: m.SenderKind, Visibility: m.Visibility,
				Kind: m.Kind, Text: apiCutRunes(m.Text, apiPreviewRunes), CreatedAt: apiTime(m.CreatedAt)}
		}
		out[i] = v
	}
	return out, nil
}

// unreadCounts counts, for each conversation, the customer's messages
// agents have not read yet (core.UnreadCounts).
func (a *api) unreadCounts(ctx context.Context, cs []core.Conversation, last map[int64]core.Message) (map[int64]int, error) {
	return core.UnreadCounts(ctx, a.store, cs, last, false)
}

// windowEnds is when c's reply window closes, or nil.
func (a *api) windowEnds(c core.Conversation) *time.Time {
	if a.svc == nil {
		return nil
	}
	return apiTime(a.svc.WindowEnds(c))
}

// answerConversation answers one conversation, enriched.
func (a *api) answerConversation(w http.ResponseWriter, ctx context.Context, c core.Conversation) error {
	vs, err := a.conversationViews(ctx, []core.Conversation{c})
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, vs[0])
	return nil
}

type apiConversationList struct {
	Conversations []apiConversationView `json:"conversations"`
	// Next is the before cursor of the next page; null when this page is
	// the last. A page that ends exactly at the last conversation may
	// still carry one, and the next page is then empty.
	Next *int64 `json:"next"`
}

// apiConversationFilter reads the list's query parameters. Unknown parameters
// are an error, so a misspelt filter does not silently list everything.
func apiConversationFilter(q url.Values, me core.Agent) (core.ConversationFilter, error) {
	f := core.ConversationFilter{Limit: apiDefaultConversations}
	for k, vs := range q {
		if len(vs) > 1 && k != "status" {
			return f, apiRepeated(k)
		}
		switch k {
		case "status":
			for _, v := range vs {
				for _, s := range strings.Split(v, ",") {
					st := core.ConversationStatus(strings.TrimSpace(s))
					if !st.Valid() {
						return f, httpx.BadRequest("status must be pending, open or resolved, got %q", s)
					}
					if !slices.Contains(f.Statuses, st) {
						f.Statuses = append(f.Statuses, st)
					}
				}
			}
		case "assignee":
			switch v := q.Get(k); v {
			case "me":
				f.AssigneeID = me.ID
			case "none":
				f.Unassigned = true
			default:
				id, err := apiParseID(v)
				if err != nil {
					return f, httpx.BadRequest("assignee must be me, none or an agent id, got %q", v)
				}
				f.AssigneeID = id
			}
		case "channel":
			f.Channel = q.Get(k)
			if f.Channel == "" || len(f.Channel) > 100 {
				return f, httpx.BadRequest("channel must be a channel instance name")
			}
		case "contact":
			id, err := apiParseID(q.Get(k))
			if err != nil {
				return f, httpx.BadRequest("contact must be a contact id, got %q", q.Get(k))
			}
			f.ContactID = id
		case "before":
			id, err := apiParseID(q.Get(k))
			if err != nil {
				return f, httpx.BadRequest("before must be a conversation id, got %q", q.Get(k))
			}
			f.BeforeID = id
		case "limit":
			n, err := apiQueryInt(q, k, 1, apiMaxConversations)
			if err != nil {
				return f, err
			}
			f.Limit = int(n)
		default:
			return f, httpx.BadRequest("unknown query parameter %q", k)
		}
	}
	return f, nil
}

// apiRepeated refuses a query parameter given more than once, which the
// list would otherwise read as its first value alone.
func apiRepeated(k string) error {
	return httpx.BadRequest("%s is given more than once", k)
}

// apiQueryInt reads an integer query parameter within [lo, hi].
func apiQueryInt(q url.Values, k string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(q.Get(k), 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, httpx.BadRequest("%s must be an integer from %d to %d, got %q", k, lo, hi, q.Get(k))
	}
	return n, nil
}

// listConversations lists conversations, newest first, filtered and paged.
func (a *api) listConversations(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	f, err := apiConversationFilter(r.URL.Query(), me)
	if err != nil {
		return err
	}
	ctx := r.Context()
	cs, err := a.store.Conversations(ctx, f)
	if err != nil {
		return err
	}
	out := apiConversationList{}
	if out.Conversations, err = a.conversationViews(ctx, cs); err != nil {
		return err
	}
	if len(cs) == f.Limit {
		next := cs[len(cs)-1].ID
		out.Next = &next
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

func (a *api) getConversation(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	c, err := a.store.Conversation(r.Context(), id)
	if err != nil {
		return err
	}
	return a.answerConversation(w, r.Context(), c)
}

// apiMessageView is a message as the API shows it to agents.
type apiMessageView struct {
	ID             int64              `json:"id"`
	ConversationID int64              `json:"conversation_id"`
	Seq            int64              `json:"seq"`
	SenderKind     core.SenderKind    `json:"sender_kind"`
	SenderID       int64              `json:"sender_id"` // the agent or contact; 0 for bot and system
	Visibility     core.Visibility    `json:"visibility"`
	Kind           core.ContentKind   `json:"kind"`
	Text           string             `json:"text,omitempty"`
	Media          *apiMediaView      `json:"media,omitempty"`
	Event          *apiEventView      `json:"event,omitempty"`
	Status         core.MessageStatus `json:"status"`
	FailReason     string             `json:"fail_reason,omitempty"`
	ResendOf       int64              `json:"resend_of,omitempty"`
	CreatedAt      *time.Time         `json:"created_at"`
}

type apiMediaView struct {
	Key     string `json:"key"`
	Name    string `json:"name,omitempty"`
	Type    string `json:"type"`
	Size    int64  `json:"size"`
	Preview string `json:"preview,omitempty"`
}

type apiEventView struct {
	Type    core.EventType `json:"type"`
	AgentID int64          `json:"agent_id,omitempty"`
	FromID  int64          `json:"from_id,omitempty"`
	ByID    int64          `json:"by_id,omitempty"`
}

func apiViewMessage(m core.Message) apiMessageView {
	v := apiMessageView{
		ID: m.ID, ConversationID: m.ConversationID, Seq: m.Seq, SenderKind: m.SenderKind, SenderID: m.SenderID,
		Visibility: m.Visibility, Kind: m.Kind, Text: m.Text, Status: m.Status, FailReason: m.FailReason,
		ResendOf: m.ResendOf, CreatedAt: apiTime(m.CreatedAt),
	}
	if m.Media != nil {
		v.Media = &apiMediaView{Key: m.Media.Key, Name: m.Media.Name, Type: m.Media.Type, Size: m.Media.Size,
			Preview: m.Media.Preview}
	}
	if m.Event != nil {
		v.Event = &apiEventView{Type: m.Event.Type, AgentID: m.Event.AgentID, FromID: m.Event.FromID, ByID: m.Event.ByID}
	}
	return v
}

type apiMessageList struct {
	Messages []apiMessageView `json:"messages"`
	// HasMore says there are more messages beyond this page in the
	// direction asked: older for before_seq (and by default), newer for
	// after_seq.
	HasMore bool `json:"has_more"`
}

// listMessages pages through a conversation's history, notes included, in
// sequence order. By default it returns the newest page; before_seq pages
// back, after_seq pages forward.
func (a *api) listMessages(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	mq := core.MessageQuery{ConversationID: id}
	limit := int64(apiDefaultMessages)
	for k, vs := range q {
		if len(vs) > 1 {
			return apiRepeated(k)
		}
		switch k {
		case "before_seq":
			if mq.BeforeSeq, err = apiQueryInt(q, k, 1, math.MaxInt64); err != nil {
				return err
			}
		case "after_seq":
			if mq.AfterSeq, err = apiQueryInt(q, k, 0, math.MaxInt64); err != nil {
				return err
			}
		case "limit":
			if limit, err = apiQueryInt(q, k, 1, apiMaxMessages); err != nil {
				return err
			}
		default:
			return httpx.BadRequest("unknown query parameter %q", k)
		}
	}
	backward := mq.BeforeSeq > 0 || !q.Has("after_seq")
	if mq.BeforeSeq == 0 && backward {
		mq.BeforeSeq = math.MaxInt64 // the newest page
	}
	mq.Limit = int(limit) + 1 // one more tells whether there are more
	ms, err := a.store.Messages(r.Context(), mq)
	if err != nil {
		return err
	}
	out := apiMessageList{}
	if len(ms) > int(limit) {
		out.HasMore = true
		if backward {
			ms = ms[1:] // the oldest is beyond the page
		} else {
			ms = ms[:limit]
		}
	}
	out.Messages = make([]apiMessageView, len(ms))
	for i, m := range ms {
		out.Messages[i] = apiViewMessage(m)
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

// apiMessageRequest is a reply or a note.
type apiMessageRequest struct {
	// ClientID is the client's own id for the message: a retry with the
	// same one is stored once and answered with the stored message.
	ClientID string `json:"client_id"`
	// Kind is text (the default), image or file (Media, with Text as an
	// optional caption), or template (replies only: Template).
	Kind     core.ContentKind `json:"kind"`
	Text     string           `json:"text"`
	Media    *apiMediaRef     `json:"media"`
	Template string           `json:"template"`
}

// apiMediaRef names a stored file (an upload's key) for a message; name is
// what the recipient is shown. Type, size and preview are read from storage.
type apiMediaRef struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Preview string `json:"preview"` // accepted (an upload's answer may be sent back as is) and ignored
	Type    string `json:"type"`    // ditto
	Size    int64  `json:"size"`    // ditto
}

func (q *apiMessageRequest) validate() error {
	// The same rule as the realtime protocol's send id, so that one id
	// means one message whichever transport carries it.
	if q.ClientID == "" || len(q.ClientID) > apiMaxClientID {
		return httpx.BadRequest("client_id must have 1 to %d characters", apiMaxClientID)
	}
	for _, c := range []byte(q.ClientID) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._~-", c) >= 0) {
			return httpx.BadRequest("client_id may hold only letters, digits and . _ ~ -")
		}
	}
	if len(q.Text) > maxTextBytes { // as over the realtime protocol
		return &httpx.RequestError{Status: http.StatusRequestEntityTooLarge, Code: httpx.CodeTooLarge, Msg: fmt.Sprintf("text over %d bytes", maxTextBytes)}
	}
	switch q.Kind {
	case "", core.KindText:
		q.Kind = core.KindText
		if strings.TrimSpace(q.Text) == "" {
			return httpx.BadRequest("text is required")
		}
		if q.Media != nil || q.Template != "" {
			return httpx.BadRequest("a text message has no media or template")
		}
	case core.KindImage, core.KindFile:
		if q.Media == nil || q.Media.Key == "" {
			return httpx.BadRequest("media.key is required for kind %s", q.Kind)
		}
		if q.Template != "" {
			return httpx.BadRequest("an %s message has no template", q.Kind)
		}
	case core.KindTemplate:
		if name := strings.TrimSpace(q.Template); name == "" || len(name) > apiMaxTemplateName {
			return httpx.BadRequest("template must name one of the channel's templates")
		}
		if q.Text != "" || q.Media != nil {
			return httpx.BadRequest("a template message has only the template's name")
		}
	default:
		return httpx.BadRequest("kind must be text, image, file or template, got %q", q.Kind)
	}
	return nil
}

// agentClientKey is the dedup key of a message an agent sends with a client
// id: scoped to the agent ("a" and the id), so two agents' ids never
// collide, and the same whichever transport (REST or socket) carried it.
// The scope never holds a '/', which a visitor's always does.
func agentClientKey(agentID int64, clientID string) string {
	return core.ClientKey("a"+strconv.FormatInt(agentID, 10), clientID)
}

func (a *api) postReply(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return a.postMessage(w, r, me, core.Public)
}

func (a *api) postNote(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return a.postMessage(w, r, me, core.Internal)
}

// postMessage sends a reply (Public) or adds a note (Internal). A retry
// with the same client_id answers the stored message; a client_id already
// used for another conversation, or for a message of the other visibility,
// is 409.
func (a *api) postMessage(w http.ResponseWriter, r *http.Request, me core.Agent, vis core.Visibility) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	req, err := apiDecode[apiMessageRequest](w, r, a.c.cfg.MaxFrameBytes)
	if err != nil {
		return err
	}
	m := core.Message{Kind: req.Kind, Text: req.Text, DedupKey: agentClientKey(me.ID, req.ClientID)}
	switch req.Kind {
	case core.KindImage, core.KindFile:
		if m.Media, err = a.replyMedia(r.Context(), req.Media, req.Kind); err != nil {
			return err
		}
	case core.KindTemplate:
		if vis == core.Internal {
			return httpx.BadRequest("a template goes to the customer; it cannot be a note")
		}
		// Service.SendTemplate, with the client's id for retries.
		m.Text = strings.TrimSpace(req.Template)
	}
	send := a.svc.Reply
	if vis == core.Internal {
		send = a.svc.Note
	}
	sent, err := send(r.Context(), me.ID, id, m)
	if err != nil {
		return err
	}
	if sent.ConversationID != id || sent.Visibility != vis {
		return &httpx.RequestError{Status: http.StatusConflict, Code: httpx.CodeConflict,
			Msg: "client_id " + strconv.Quote(req.ClientID) + " was already used for another message"}
	}
	httpx.JSON(w, http.StatusCreated, apiViewMessage(sent))
	return nil
}

// conversationAction runs one of core's conversation actions and answers
// the conversation after it.
func (a *api) conversationAction(w http.ResponseWriter, r *http.Request,
	act func(ctx context.Context, convID int64) (core.Conversation, error)) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	c, err := act(r.Context(), id)
	if err != nil {
		return err
	}
	return a.answerConversation(w, r.Context(), c)
}

// take assigns an unassigned conversation to the caller; of two agents
// taking one at once, one gets 200 and the other 409.
func (a *api) take(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return a.conversationAction(w, r, func(ctx context.Context, id int64) (core.Conversation, error) {
		return a.svc.Take(ctx, me.ID, id)
	})
}

type apiAgentTarget struct {
	AgentID *int64 `json:"agent_id"`
}

func (q *apiAgentTarget) validate() error {
	if q.AgentID == nil || *q.AgentID < 0 {
		return httpx.BadRequest("agent_id is required: an agent id, or 0 for the queue")
	}
	return nil
}

// assign gives a conversation to an agent: admins to anyone (from whoever
// has it), agents only to themselves and only an unassigned one (a take).
func (a *api) assign(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[apiAgentTarget](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	to := *req.AgentID
	if to == 0 {
		return httpx.BadRequest("agent_id must be an agent; use transfer with agent_id 0 to send a conversation back to the queue")
	}
	if me.Role != core.RoleAdmin {
		if to != me.ID {
			return &httpx.RequestError{Status: http.StatusForbidden, Code: httpx.CodeForbidden,
				Msg: "only an admin may assign a conversation to someone else"}
		}
		return a.conversationAction(w, r, func(ctx context.Context, id int64) (core.Conversation, error) {
			c, err := a.store.Conversation(ctx, id)
			switch {
			case err != nil:
				return c, err
			case c.AssigneeID == me.ID && c.Status != core.StatusResolved:
				return c, nil // theirs already: nothing changes
			case c.AssigneeID != 0 && c.AssigneeID != me.ID:
				return c, fmt.Errorf("%w: #%d is another agent's; only an admin may move it", core.ErrForbidden, id)
			}
			return a.svc.Take(ctx, me.ID, id) // a resolved one: 409
		})
	}
	return a.moveTo(w, r, me, to)
}

// transfer moves a conversation from its assignee to another agent, or back
// to the queue with agent_id 0. The assignee or an admin may.
func (a *api) transfer(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[apiAgentTarget](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	return a.moveTo(w, r, me, *req.AgentID)
}

// moveTo is Service.Transfer, except that moving a conversation to whoever
// already has it changes nothing (no event) when the caller could move it.
func (a *api) moveTo(w http.ResponseWriter, r *http.Request, me core.Agent, to int64) error {
	return a.conversationAction(w, r, func(ctx context.Context, id int64) (core.Conversation, error) {
		c, err := a.store.Conversation(ctx, id)
		if err != nil {
			return c, err
		}
		if c.AssigneeID == to && c.Status != core.StatusResolved && (me.Role == core.RoleAdmin || c.AssigneeID == me.ID) {
			return c, nil
		}
		return a.svc.Transfer(ctx, me.ID, id, to)
	})
}

func (a *api) closeConversation(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return a.conversationAction(w, r, func(ctx context.Context, id int64) (core.Conversation, error) {
		return a.svc.Close(ctx, me.ID, id)
	})
}

func (a *api) reopenConversation(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return a.conversationAction(w, r, func(ctx context.Context, id int64) (core.Conversation, error) {
		return a.svc.Reopen(ctx, me.ID, id)
	})
}

type apiReadRequest struct {
	Seq int64 `json:"seq"`
}

func (q *apiReadRequest) validate() error {
	if q.Seq < 1 {
		return httpx.BadRequest("seq must be a positive sequence number")
	}
	return nil
}

// markRead records that agents have read the customer's messages up to seq.
func (a *api) markRead(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	req, err := apiDecode[apiReadRequest](w, r, apiMaxSmallBody)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, err := a.store.Conversation(ctx, id); err != nil {
		return err
	}
	if err := a.svc.MarkUpTo(ctx, core.Receipt{ConversationID: id, UpToSeq: req.Seq, Status: core.MsgRead, AgentID: me.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// resend sends a failed outgoing message again, as a new message linked to
// it (resend_of).
func (a *api) resend(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	m, err := a.svc.Resend(r.Context(), me.ID, id)
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusCreated, apiViewMessage(m))
	return nil
}

// apiCutRunes cuts s to at most n characters.
func apiCutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// UseTemplates tells the channel how to list a customer channel instance's
// message templates (WhatsApp's, by name), which the console offers when a
// conversation's reply window has closed. The node calls it once, before it
// serves.
func (c *Channel) UseTemplates(list func(channel string) []string) {
	c.api.templates.Store(&list)
}

type apiTemplateList struct {
	Templates []string `json:"templates"`
}

// listTemplates is GET /api/v1/conversations/{id}/templates: the names of
// the templates an agent may send to the conversation's customer (kind
// template), e.g. after its reply window closed. Empty for channels without
// templates.
func (a *api) listTemplates(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	id, err := apiPathID(r)
	if err != nil {
		return err
	}
	c, err := a.store.Conversation(r.Context(), id)
	if err != nil {
		return err
	}
	out := apiTemplateList{Templates: []string{}}
	if list := a.templates.Load(); list != nil {
		out.Templates = append(out.Templates, (*list)(c.Channel)...)
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}
