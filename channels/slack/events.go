package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Limits and budgets of the Events API endpoint.
const (
	// maxEventBytes caps a request body. Message events are a few KB.
	maxEventBytes = 1 << 20
	// handleBudget bounds the work done before answering: Slack wants an
	// answer within 3 s, and retries otherwise.
	handleBudget = 2500 * time.Millisecond
	dedupeSize   = 4096 // event ids remembered per node
	noticeQueue  = 256  // ephemeral notices waiting to be posted
)

// Mount implements channels.Mounter: the Events API Request URL is
// {public_url}/webhooks/NAME/events. It is not mounted without a signing
// secret (Socket Mode only).
func (c *Channel) Mount(mux *http.ServeMux) {
	if c.cfg.SigningSecret != "" {
		mux.Handle(EventsPath(c.name), http.HandlerFunc(c.serveEvents))
	}
}

// serveEvents receives Events API requests.
//
// Answering within 3 s and losing nothing are reconciled like this: the
// one durable effect of an event, the agent's reply (or note), is committed
// through core.Service before the answer, as a single group-committed write
// that takes milliseconds, under a budget of handleBudget. Slack is
// answered 200 only once it is committed, so an event Slack sees
// acknowledged is never lost; when the store is slower than the budget the
// answer is 503 and Slack retries, and the retry is stored once (the
// reply's dedup key is the Slack message's ts, store-wide). What is not
// durable, the ephemeral explanations to agents, is posted after the
// answer by Run.
func (c *Channel) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, "use POST")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEventBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, http.StatusRequestEntityTooLarge, httpx.CodeTooLarge, fmt.Sprintf("body over %d bytes", maxEventBytes))
			return
		}
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "could not read body")
		return
	}
	// Verify before reading anything: the signature and its 5-minute window.
	if err := verify(r.Header, body, c.cfg.SigningSecret); err != nil {
		httpx.Error(w, http.StatusUnauthorized, httpx.CodeUnauthorized, "bad Slack signature: "+err.Error())
		return
	}
	ev, err := ParseEvent(body)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, err.Error())
		return
	}
	if ev.Type == slackevents.URLVerification {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, ev.Challenge)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), handleBudget)
	defer cancel()
	if err := c.handleEvent(ctx, ev); err != nil {
		c.log.Warn("slack: event not handled; Slack will retry", "event", ev.EventID, "retry", r.Header.Get("X-Slack-Retry-Num"), "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "not handled; retry")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// verify checks a request's Slack signature (HMAC-SHA256 over
// "v0:{timestamp}:{body}", compared in constant time) and that its
// timestamp is within 5 minutes of now.
func verify(h http.Header, body []byte, secret string) error {
	sv, err := slack.NewSecretsVerifier(h, secret)
	if err != nil {
		return err
	}
	if _, err := sv.Write(body); err != nil {
		return err
	}
	return sv.Ensure()
}

// Event is an Events API payload as kefu reads it.
type Event struct {
	// Type is the outer type: url_verification, event_callback, or another
	// one kefu ignores (app_rate_limited…).
	Type      string
	Challenge string // url_verification
	EventID   string // event_callback
	// Message is the event when it is a message event; nil for any other
	// inner event, which kefu ignores.
	Message *slackevents.MessageEvent
}

// outer is what ParseEvent reads before handing message events to
// slackevents.
type outer struct {
	Type      string          `json:"type"`
	Challenge string          `json:"challenge"`
	EventID   string          `json:"event_id"`
	Event     json.RawMessage `json:"event"`
}

// ParseEvent decodes an Events API request body. Its errors mean the body
// is malformed (answer 400); an event kefu has no use for parses without
// error and is ignored.
func ParseEvent(body []byte) (Event, error) {
	var o outer
	if err := json.Unmarshal(body, &o); err != nil {
		return Event{}, errors.New("malformed JSON")
	}
	ev := Event{Type: o.Type, Challenge: o.Challenge, EventID: o.EventID}
	switch o.Type {
	case slackevents.URLVerification:
		if o.Challenge == "" {
			return ev, errors.New("url_verification without a challenge")
		}
		return ev, nil
	case slackevents.CallbackEvent:
	default:
		return ev, nil
	}
	if o.EventID == "" {
		return ev, errors.New("event_callback without an event_id")
	}
	var inner struct {
		Type string `json:"type"`
	}
	if len(o.Event) == 0 || json.Unmarshal(o.Event, &inner) != nil {
		return ev, errors.New("event_callback without an event")
	}
	if inner.Type != string(slackevents.Message) {
		return ev, nil
	}
	// The signature was checked; the deprecated verification token is not.
	parsed, err := slackevents.ParseEvent(json.RawMessage(body), slackevents.OptionNoVerifyToken())
	if err != nil {
		return ev, errors.New("malformed message event")
	}
	return fromAPIEvent(parsed), nil
}

// fromAPIEvent converts an event slackevents parsed (over HTTP or Socket
// Mode).
func fromAPIEvent(e slackevents.EventsAPIEvent) Event {
	ev := Event{Type: e.Type}
	switch d := e.Data.(type) {
	case *slackevents.EventsAPICallbackEvent:
		ev.EventID = d.EventID
	case *slackevents.EventsAPIURLVerificationEvent:
		ev.Challenge = d.Challenge
	}
	if m, ok := e.InnerEvent.Data.(*slackevents.MessageEvent); ok {
		ev.Message = m
	}
	return ev
}

// handleEvent does what an event asks, once per event id on this node. A
// non-nil error is transient (the store failed or was too slow): the
// caller does not acknowledge the event, so Slack sends it again.
func (c *Channel) handleEvent(ctx context.Context, ev Event) error {
	if ev.Type != slackevents.CallbackEvent || ev.Message == nil {
		return nil
	}
	switch c.dedupe.begin(ev.EventID) {
	case seenDone:
		return nil // a retry of an event handled here already
	case seenBusy:
		return errors.New("the first delivery of this event is still being handled")
	}
	err := c.handleMessage(ctx, ev.Message)
	c.dedupe.end(ev.EventID, err == nil)
	return err
}

// handleMessage turns an agent's thread reply into a reply to the customer
// or a note. Everything that is not a mapped agent's reply in a known
// thread is answered without storing anything.
func (c *Channel) handleMessage(ctx context.Context, m *slackevents.MessageEvent) error {
	if m.Channel != c.cfg.Channel {
		return nil // another channel the bot is in
	}
	switch m.SubType {
	case "", "thread_broadcast", "file_share":
	default:
		return nil // edits, deletions, joins, bot messages…
	}
	if m.BotID != "" || m.User == "" || m.User == c.botUser() {
		return nil // our own posts (and other bots') are never replies
	}
	if m.ThreadTimeStamp == "" || m.ThreadTimeStamp == m.TimeStamp {
		return nil // not in a thread: people talking in the channel
	}
	convID, ok, err := c.conversationOf(ctx, m.Channel, m.ThreadTimeStamp)
	if err != nil {
		return err
	}
	if !ok {
		return nil // a thread kefu did not start
	}
	agent, ok, err := c.agentFor(ctx, m.User)
	if err != nil {
		return err
	}
	if !ok {
		c.notify(m, fmt.Sprintf("Your reply in #%d went nowhere: your Slack account (%s) is not mapped to a kefu agent. "+
			"An admin sets slack_user: %s on your agent in kefu; then reply again.", convID, m.User, m.User))
		return nil
	}
	text, isNote := noteText(strings.TrimSpace(PlainText(m.Text)))
	if text == "" {
		if m.SubType == "file_share" {
			c.notify(m, fmt.Sprintf("Your file in #%d was not sent: kefu forwards text from Slack. Send files from the console.", convID))
		}
		return nil
	}
	msg := core.Message{Kind: core.KindText, Text: text, DedupKey: core.ProviderKey(c.name, m.Channel+":"+m.TimeStamp)}
	if isNote {
		_, err = c.svc.Note(ctx, agent.ID, convID, msg)
	} else {
		_, err = c.svc.Reply(ctx, agent.ID, convID, msg)
	}
	if err == nil {
		if m.SubType == "file_share" {
			c.notify(m, fmt.Sprintf("Your text in #%d was sent, the file was not: kefu forwards text from Slack. Send files from the console.", convID))
		}
		return nil
	}
	if reason := refusal(err); reason != "" {
		what := "reply"
		if isNote {
			what = "note"
		}
		c.notify(m, fmt.Sprintf("Your %s in #%d was not sent: %s", what, convID, reason))
		return nil
	}
	return err
}

// refusal explains why the Service refused an agent's message, or returns
// "" when the error is not a refusal (the store failed: retry).
func refusal(err error) string {
	switch {
	case errors.Is(err, core.ErrWindowClosed):
		return "the customer's channel only accepts replies for a while after their last message, and that window has closed (" + err.Error() + "). The customer must write first; the console can send an approved template where the channel has one."
	case errors.Is(err, core.ErrForbidden):
		return "kefu refused it (" + err.Error() + ")."
	case errors.Is(err, core.ErrNotFound):
		return "the conversation no longer exists."
	case errors.Is(err, core.ErrInvalid), errors.Is(err, core.ErrConflict), errors.Is(err, core.ErrCapacity):
		return err.Error() + "."
	}
	return ""
}

// agentFor finds the active or inactive agent mapped to a Slack user.
func (c *Channel) agentFor(ctx context.Context, user string) (core.Agent, bool, error) {
	agents, err := c.store.Agents(ctx)
	if err != nil {
		return core.Agent{}, false, err
	}
	for _, a := range agents {
		if a.SlackUser != "" && a.SlackUser == user {
			return a, true, nil
		}
	}
	return core.Agent{}, false, nil
}

// --- Ephemeral notices.

// notice is an ephemeral explanation for one Slack user.
type notice struct {
	channel, user, threadTS, text string
}

// notify queues an ephemeral explanation for the author of m; Run posts
// it. When the queue is full the notice is dropped (it is a courtesy).
func (c *Channel) notify(m *slackevents.MessageEvent, text string) {
	n := notice{channel: m.Channel, user: m.User, threadTS: m.ThreadTimeStamp, text: text}
	select {
	case c.notices <- n:
	default:
		c.log.Warn("slack: notice queue full; an ephemeral explanation was dropped", "user", m.User)
	}
}

// postNotices posts queued notices until ctx is done. A notice is tried a
// few times (a rate limit holds it until Retry-After), then dropped.
func (c *Channel) postNotices(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-c.notices:
			for attempt := 0; attempt < 4; attempt++ {
				err := c.api.ephemeral(ctx, n.channel, n.user,
					slack.MsgOptionText(escape(n.text), false), slack.MsgOptionTS(n.threadTS))
				if err == nil || ctx.Err() != nil || isPermanent(classify(err)) {
					if err != nil && ctx.Err() == nil {
						c.log.Warn("slack: ephemeral notice refused", "user", n.user, "err", err)
					}
					break
				}
				if _, rl := rateLimited(err); !rl && !sleep(ctx, backoff(attempt)) {
					return
				}
			}
		}
	}
}

// --- Event id de-duplication.

type seen int

const (
	seenNew  seen = iota // first time: handle it
	seenBusy             // being handled (a retry arrived meanwhile)
	seenDone             // handled
)

// dedupe remembers the last few thousand event ids handled on this node,
// so that Slack's retries (X-Slack-Retry-Num) of an event already handled
// are answered without doing anything again, not even an ephemeral notice.
// It is an optimisation: what must not be doubled, the reply, is stored
// once cluster-wide by its dedup key.
type dedupe struct {
	mu    sync.Mutex
	state map[string]bool // id → done
	ring  []string
	next  int
}

func newDedupe(n int) *dedupe {
	return &dedupe{state: make(map[string]bool, n), ring: make([]string, n)}
}

// begin records that id is being handled and says what was known of it.
func (d *dedupe) begin(id string) seen {
	d.mu.Lock()
	defer d.mu.Unlock()
	if done, ok := d.state[id]; ok {
		if done {
			return seenDone
		}
		return seenBusy
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.state, old)
	}
	d.ring[d.next] = id
	d.next = (d.next + 1) % len(d.ring)
	d.state[id] = false
	return seenNew
}

// end records the outcome: a failed event is forgotten, so its retry is
// handled afresh.
func (d *dedupe) end(id string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, known := d.state[id]; !known {
		return
	}
	if ok {
		d.state[id] = true
	} else {
		delete(d.state, id)
	}
}

// noteText reads an agent's thread reply: "note: text" (any case) is an
// internal note. A note must never reach the customer, so the ways the
// prefix gets typed count too: Slack's formatting around it ("*note:*",
// "_note_:"), spaces before the colon ("note :") and the full-width colon
// of Chinese keyboards ("note："). It returns the text without the prefix.
func noteText(s string) (string, bool) {
	const marks = "*_~` \t"
	rest := strings.TrimLeft(s, marks)
	if len(rest) < len("note") || !strings.EqualFold(rest[:len("note")], "note") {
		return s, false
	}
	rest = strings.TrimLeft(rest[len("note"):], marks)
	for _, colon := range []string{":", "："} {
		if strings.HasPrefix(rest, colon) {
			return strings.TrimSpace(strings.TrimLeft(rest[len(colon):], marks)), true
		}
	}
	return s, false
}
