package web

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
)

// RealtimeTestType is the web channel registered under another name, so
// that the realtime tests can reach the instance a node builds
// (RealtimeTestChannel).
const RealtimeTestType = "web-rttest"

var rtTestChannels sync.Map // *core.Service → *Channel

func init() {
	channels.Register(RealtimeTestType, func() config.Section { return DefaultConfig() },
		func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
			c, err := New(name, *sec.(*Config), deps)
			if err == nil {
				// Nothing runs yet: the realtime half's store can be swapped.
				cs := &countingStore{Store: c.rt.store}
				c.rt.store = cs
				rtTestChannels.Store(deps.Service, c)
			}
			return c, err
		})
}

// RealtimeTestChannel returns the RealtimeTestType instance built for
// svc's node.
func RealtimeTestChannel(svc *core.Service) *Channel {
	c, _ := rtTestChannels.Load(svc)
	ch, _ := c.(*Channel)
	return ch
}

// countingStore counts the realtime half's message queries, and runs a
// hook once after its next read of conversations.
type countingStore struct {
	core.Store
	messages  atomic.Int64
	afterList atomic.Pointer[func()]
	afterMsgs atomic.Pointer[func()]
}

func (s *countingStore) Messages(ctx context.Context, q core.MessageQuery) ([]core.Message, error) {
	s.messages.Add(1)
	ms, err := s.Store.Messages(ctx, q)
	runOnce(&s.afterMsgs)
	return ms, err
}

// AfterNextMessagesRead runs f once, right after the realtime half's next
// message query returns.
func (c *Channel) AfterNextMessagesRead(f func()) {
	c.rt.store.(*countingStore).afterMsgs.Store(&f)
}

func (s *countingStore) Conversations(ctx context.Context, f core.ConversationFilter) ([]core.Conversation, error) {
	cs, err := s.Store.Conversations(ctx, f)
	runOnce(&s.afterList)
	return cs, err
}

// runOnce runs and clears the hook in p, if any.
func runOnce(p *atomic.Pointer[func()]) {
	if hook := p.Swap(nil); hook != nil {
		(*hook)()
	}
}

// AfterNextConversationsRead runs f once, right after the realtime half's
// next read of conversations returns (a visitor's resume reads them once).
func (c *Channel) AfterNextConversationsRead(f func()) {
	c.rt.store.(*countingStore).afterList.Store(&f)
}

// MessageQueries is how many message queries (replays, history) the
// realtime half of a RealtimeTestType instance has made.
func (c *Channel) MessageQueries() int64 { return c.rt.store.(*countingStore).messages.Load() }

// NewAgentSession plants a login session for an agent, as the REST login
// would, and returns its bearer token.
func NewAgentSession(ctx context.Context, st core.Store, agentID int64, expires time.Time) (string, error) {
	tok, hash, err := newAgentToken()
	if err != nil {
		return "", err
	}
	return tok, st.CreateSession(ctx, core.Session{TokenHash: hash, AgentID: agentID, CreatedAt: time.Now(), ExpiresAt: expires})
}

// RevokeAgentSession revokes the session of token.
func RevokeAgentSession(ctx context.Context, st core.Store, token string) error {
	return st.RevokeSession(ctx, hashToken(token))
}

// PublishUpdates puts updates on the channel's bus, as the core would.
func (c *Channel) PublishUpdates(ups ...core.Update) error {
	msg, err := bridge.Encode(bridge.UpdatesEnvelope("test", ups...), "")
	if err != nil {
		return err
	}
	return c.bus.Publisher().Publish(bridge.UpdatesTopic, msg)
}

// PublishRaw puts a raw payload on the updates topic.
func (c *Channel) PublishRaw(payload []byte) error {
	msg, err := bridge.Encode(bridge.UpdatesEnvelope("test", core.Update{Type: core.UpdateTyping, Typing: &core.Typing{}}), "")
	if err != nil {
		return err
	}
	msg.Payload = payload
	return c.bus.Publisher().Publish(bridge.UpdatesTopic, msg)
}

// RealtimeStats are the realtime half's counters.
type RealtimeStats struct {
	SlowConsumers, PingTimeouts, BadEnvelopes int64
	Visitors, Agents                          int64
}

// Stats returns the realtime half's counters.
func (c *Channel) Stats() RealtimeStats {
	rt := c.rt
	return RealtimeStats{
		SlowConsumers: rt.stats.slowConsumers.Load(), PingTimeouts: rt.stats.pingTimeouts.Load(),
		BadEnvelopes: rt.stats.badEnvelopes.Load(),
		Visitors:     rt.hub.nVisitors.Load(), Agents: rt.hub.nAgents.Load(),
	}
}
