package web

import (
	"context"
	"sync"
	"time"

	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
)

// APITestType is a channel type for the REST API's end-to-end tests: the
// web channel itself, registered under another name so that the tests can
// reach the instance a node builds (APITestChannel) and set its clocks.
const APITestType = "web-apitest"

// apiTestChannels maps a node's Service to the instance built for it.
var apiTestChannels sync.Map

func init() {
	channels.Register(APITestType, func() config.Section { return DefaultConfig() },
		func(name string, sec config.Section, deps channels.Deps) (channels.Channel, error) {
			c, err := New(name, *sec.(*Config), deps)
			if err == nil {
				apiTestChannels.Store(deps.Service, c)
			}
			return c, err
		})
}

// APITestChannel returns the APITestType instance built for svc's node.
func APITestChannel(svc *core.Service) *Channel {
	c, _ := apiTestChannels.Load(svc)
	ch, _ := c.(*Channel)
	return ch
}

// SetLoginClock sets the clock of the login throttle. Call it before the
// node serves.
func (c *Channel) SetLoginClock(now func() time.Time) { c.api.throttle.now = now }

// HashAgentToken is hashToken, for tests that plant sessions in the store.
func HashAgentToken(token string) string { return hashToken(token) }

// SweepUploads runs the sweep of unsent uploads (uploads.go) as at now.
// afterList, when not nil, runs after each page of upload records is read
// and before any of them is settled.
func (c *Channel) SweepUploads(ctx context.Context, now time.Time, afterList func()) (int, error) {
	cc := *c
	cc.store = &listHookStore{Store: c.store, afterList: afterList}
	return cc.sweepUploads(ctx, now)
}

type listHookStore struct {
	core.Store
	afterList func()
}

func (s *listHookStore) Settings(ctx context.Context, prefix, after string, limit int) ([]core.Setting, error) {
	kvs, err := s.Store.Settings(ctx, prefix, after, limit)
	if s.afterList != nil {
		s.afterList()
	}
	return kvs, err
}

// SignVisitorToken returns a visitor token for identity that expires at
// exp (in the past, for a token that has run out).
func (c *Channel) SignVisitorToken(identity string, exp time.Time) string {
	return c.rt.signVisitor(visitor{identity: identity}, exp)
}
