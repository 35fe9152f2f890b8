package web

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kefuhq/kefu/core"
)

// peer is an authenticated client (a visitor or an agent) on either
// transport: what its frames may do, and what it is sent on resume.
type peer struct {
	rt    *realtime
	agent *core.Agent // nil for a visitor
	vis   visitor
	owned []int64 // conversations known to be the visitor's
	// contact is the visitor's contact, once a conversation shows it (a
	// new visitor has none until their first message); onContact, when
	// set, is called the first time it is known.
	contact   int64
	onContact func(contactID int64)
}

// learnContact notes the visitor's contact from one of their
// conversations: an identity belongs to one contact, so the first is it.
func (p *peer) learnContact(id int64) {
	if p.contact != 0 || id <= 0 {
		return
	}
	p.contact = id
	if p.onContact != nil {
		p.onContact(id)
	}
}

func (p *peer) isAgent() bool { return p.agent != nil }

// scope makes a visitor's client ids unique per sender (core.ClientKey):
// the instance, then the identity. It always holds a '/', which an agent's
// scope (agentClientKey) never does.
func (p *peer) scope() string { return p.rt.c.name + "/" + p.vis.identity }

// handle carries out one frame (not hello) and returns the frame to answer
// with, or nil.
func (p *peer) handle(ctx context.Context, f *inFrame) *frame {
	var err error
	switch f.Type {
	case frameSend:
		var out *frame
		if out, err = p.send(ctx, f); err == nil {
			return out
		}
	case frameReceipt:
		err = p.receipt(ctx, f)
	case frameTyping:
		err = p.typing(ctx, f)
	case framePing:
		return pongFrame
	case framePong:
		return nil
	case frameHello:
		err = badFrame("hello is only the first frame of a WebSocket")
	default:
		err = &protoError{Code: codeUnknownType, Msg: "unknown frame type"}
	}
	if err != nil {
		return errorFrame(toProtoError(err, f.ID, p.rt.log))
	}
	return nil
}

func (p *peer) send(ctx context.Context, f *inFrame) (*frame, error) {
	if p.isAgent() {
		key := agentClientKey(p.agent.ID, f.ID) // the REST API's key too: one id, one message
		if f.ConversationID <= 0 {
			return nil, &protoError{Code: codeBadFrame, Msg: "an agent's send needs conversation_id", ID: f.ID}
		}
		// The store keeps whole microseconds; a message returned with
		// another creation time was stored by an earlier send of the id.
		at := p.rt.c.now().UTC().Truncate(time.Microsecond)
		m, err := p.sendContent(ctx, f) // text, or an image or file (visitor_media.go)
		if err != nil {
			return nil, err
		}
		m.DedupKey, m.CreatedAt = key, at
		var out core.Message
		vis := core.Public
		if f.Note {
			vis = core.Internal
			out, err = p.rt.svc.Note(ctx, p.agent.ID, f.ConversationID, m)
		} else {
			out, err = p.rt.svc.Reply(ctx, p.agent.ID, f.ConversationID, m)
		}
		if err != nil {
			return nil, err
		}
		if out.ConversationID != f.ConversationID || out.Visibility != vis {
			// As the REST API answers: the id was another message's.
			return nil, fmt.Errorf("%w: id %q was already used for another message", core.ErrConflict, f.ID)
		}
		return ackFrame(f.ID, &out, !out.CreatedAt.Equal(at)), nil
	}
	if ok, wait := p.rt.msgLimit.Allow(p.vis.identity); !ok {
		return nil, &protoError{Code: codeRateLimited, Msg: "too many messages; slow down", ID: f.ID, RetryAfter: wait}
	}
	m, err := p.sendContent(ctx, f) // text, or an image or file the visitor uploaded (visitor_media.go)
	if err != nil {
		return nil, err
	}
	m.DedupKey = core.ClientKey(p.scope(), f.ID)
	res, err := p.rt.svc.Ingest(ctx, core.Inbound{
		Channel: p.rt.c.name, ExternalID: p.vis.identity, Name: p.vis.name, Message: m,
	})
	if err != nil {
		return nil, err
	}
	p.own(res.Conversation.ID)
	p.learnContact(res.Conversation.ContactID)
	// Join the identity's live connections to a new conversation now, so
	// that what follows the ack (typing, receipts) reaches them too.
	p.rt.hub.joinIdentity(p.vis.identity, res.Conversation.ID, res.Conversation.ContactID)
	return ackFrame(f.ID, viewMessage(&res.Message, p.rt.names.get), res.Duplicate), nil
}

func (p *peer) receipt(ctx context.Context, f *inFrame) error {
	r := core.Receipt{ConversationID: f.ConversationID, UpToSeq: f.Seq, Status: core.MessageStatus(f.Status)}
	if !p.isAgent() {
		if err := p.signal(); err != nil {
			return err
		}
		if err := p.owns(ctx, f.ConversationID); err != nil {
			return err
		}
		r.ByContact = true
	} else {
		r.AgentID = p.agent.ID
	}
	return p.rt.svc.MarkUpTo(ctx, r)
}

func (p *peer) typing(ctx context.Context, f *inFrame) error {
	t := core.Typing{ConversationID: f.ConversationID, On: f.On}
	if p.isAgent() {
		if t.ConversationID <= 0 {
			return badFrame("an agent's typing needs conversation_id")
		}
		t.SenderKind, t.SenderID = core.SenderAgent, p.agent.ID
	} else {
		if err := p.signal(); err != nil {
			return err
		}
		if t.ConversationID == 0 {
			c, err := p.rt.newestConversation(ctx, p.vis.identity)
			if errors.Is(err, core.ErrNotFound) {
				return nil // nobody to tell yet
			} else if err != nil {
				return err
			}
			t.ConversationID = c.ID
			p.own(c.ID)
			p.learnContact(c.ContactID)
		} else if err := p.owns(ctx, t.ConversationID); err != nil {
			return err
		}
		t.SenderKind = core.SenderContact
	}
	p.rt.svc.Typing(ctx, t)
	return nil
}

// signal rate-limits a visitor's typing and receipt frames.
func (p *peer) signal() error {
	if ok, wait := p.rt.signalLimit.Allow(p.vis.identity); !ok {
		return &protoError{Code: codeRateLimited, Msg: "too many frames; slow down", RetryAfter: wait}
	}
	return nil
}

// owns checks that conversation id is the visitor's (ErrNotFound if not).
func (p *peer) owns(ctx context.Context, id int64) error {
	if slices.Contains(p.owned, id) {
		return nil
	}
	c, err := p.rt.visitorConversation(ctx, p.vis.identity, id)
	if err != nil {
		return err
	}
	p.own(id)
	p.learnContact(c.ContactID)
	return nil
}

func (p *peer) own(id int64) {
	if id > 0 && !slices.Contains(p.owned, id) {
		p.owned = append(p.owned, id)
	}
}

// replayPage is how many messages a replay reads from the store at a time.
const replayPage = 500

// errReplayFull stops a replay that reached its limit.
var errReplayFull = errors.New("replay limit reached")

// replayPart is a conversation a visitor's replay covers, from after.
type replayPart struct {
	id, after int64
	last      int64 // the conversation's last seq when read (internal entries included)
	upToDate  bool  // nothing follows after: no query
}

// planReplay reads what a visitor's replay from (conv, seq) covers: conv
// (ErrNotFound unless it is the visitor's), then the identity's newer
// conversations; with conv 0, the identity's newest (none: nothing). The
// caller has subscribed to the identity's live messages first: what commits
// after this read arrives live, so a conversation whose last sequence
// number, read here, is at or below the client's has nothing to replay and
// is not queried. One read of the identity's conversations does it all: a
// client reconnecting with nothing missed costs no other. Every
// conversation planned joins the identity's subscriptions in the hub
// (its typing, statuses and receipts reach them from then on).
func (p *peer) planReplay(ctx context.Context, conv, seq int64) ([]replayPart, error) {
	if conv == 0 {
		c, err := p.rt.newestConversation(ctx, p.vis.identity)
		switch {
		case errors.Is(err, core.ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, err
		}
		p.learnContact(c.ContactID)
		return p.joined([]replayPart{{id: c.ID, last: c.LastSeq}}), nil
	}
	own, newer, err := p.rt.newerConversations(ctx, p.vis.identity, conv)
	if err != nil {
		return nil, err
	}
	if own == nil { // not among the identity's newest, or not theirs
		c, err := p.rt.visitorConversation(ctx, p.vis.identity, conv)
		if err != nil {
			return nil, err
		}
		own = &c
	}
	p.learnContact(own.ContactID)
	// A cursor past the conversation's end (a restored database, a
	// client's bug) is taken as its end: the messages that come next are
	// the client's, and synced says where it is.
	parts := []replayPart{{id: conv, after: min(seq, own.LastSeq), last: own.LastSeq, upToDate: own.LastSeq <= seq}}
	for _, c := range newer {
		parts = append(parts, replayPart{id: c.ID, last: c.LastSeq})
	}
	return p.joined(parts), nil
}

// joined marks the visitor's conversations in parts as theirs, for this
// peer and the hub, and returns parts.
func (p *peer) joined(parts []replayPart) []replayPart {
	for _, pt := range parts {
		p.own(pt.id)
		p.rt.hub.joinIdentity(p.vis.identity, pt.id, p.contact)
	}
	return parts
}

// replayVisitor sends, through emit, every message the visitor may see in
// parts, in order. It stops after limit frames (0: no limit). It returns
// the cursor after what it sent: the newest conversation and its last
// sequence number covered. A conversation replayed to the end is covered
// up to its last seq as read, internal entries after its last public
// message included, so that the client's next resume need not query it.
func (p *peer) replayVisitor(ctx context.Context, parts []replayPart, limit int, emit func(*frame) error) (curConv, curSeq int64, err error) {
	n := 0
	for _, pt := range parts {
		curConv, curSeq = pt.id, pt.after
		for !pt.upToDate {
			ms, err := p.rt.store.Messages(ctx, core.MessageQuery{ConversationID: pt.id, AfterSeq: curSeq, Limit: replayPage, PublicOnly: true})
			if err != nil {
				return curConv, curSeq, err
			}
			for i := range ms {
				if limit > 0 && n >= limit {
					return curConv, curSeq, errReplayFull
				}
				if err := emit(visitorMessageFrame(&ms[i], p.rt.names.get)); err != nil {
					return curConv, curSeq, err
				}
				curSeq = ms[i].Seq
				n++
			}
			if len(ms) < replayPage {
				break
			}
		}
		// Every public message up to pt.last was in the pages read: the
		// stores filter before they limit, and a short page is the end.
		curSeq = max(curSeq, pt.last)
	}
	return curConv, curSeq, nil
}

// replayAgent sends, through emit, every message with an ID above after, in
// ID order, each with its conversation as it is now. It stops after limit
// frames (0: no limit) and returns the last ID sent (after, if none).
func (p *peer) replayAgent(ctx context.Context, after int64, limit int, emit func(*frame) error) (int64, error) {
	convs := map[int64]*core.Conversation{}
	n := 0
	for {
		ms, err := p.rt.store.Feed(ctx, after, replayPage)
		if err != nil {
			return after, err
		}
		for i := range ms {
			if limit > 0 && n >= limit {
				return after, errReplayFull
			}
			m := &ms[i]
			c, ok := convs[m.ConversationID]
			if !ok {
				if cv, err := p.rt.store.Conversation(ctx, m.ConversationID); err == nil {
					c = &cv
				}
				convs[m.ConversationID] = c
			}
			if err := emit(agentMessageFrame(m, c)); err != nil {
				return after, err
			}
			after = m.ID
			n++
		}
		if len(ms) < replayPage {
			return after, nil
		}
	}
}
