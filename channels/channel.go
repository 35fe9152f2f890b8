// Package channels holds the channel adapter seam and the registry of
// channel types. Each adapter lives in its own sub-package (web, webhook,
// wechat, telegram…) and registers itself from init; cmd/kefu imports the
// adapters it ships.
package channels

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Channel is one configured channel instance: a customer-facing adapter that
// turns its provider's traffic into core.Inbound messages for the Service,
// or an agent-facing one that turns agent commands into Service calls.
//
// A Channel is built once per instance by its type's Factory and lives until
// the process ends. Optional capabilities are separate interfaces, found by
// type assertion:
//   - http.Handler: receives its provider's webhooks at /webhooks/NAME.
//   - Mounter: serves routes of its own (the web channel's widget and API).
//   - bridge.Sender: delivers outgoing messages from the outbox.
//   - Runner: runs a loop (polling, a socket to the provider).
//   - Exclusive: its Runner's loop must run on one node of a cluster at a
//     time.
//   - Checker: reports whether it is usable, for /readyz.
//   - Windowed: has a reply window.
//   - bridge.FollowHandler: follows every conversation's messages for
//     agents (Work WeChat, Slack), from a durable cursor.
type Channel interface {
	// Name is the instance name: the key under channels: in kefu.yaml.
	Name() string
	// Type is the registered channel type.
	Type() string
}

// Mounter is a channel that serves routes beyond /webhooks/NAME.
type Mounter interface {
	Mount(mux *http.ServeMux)
}

// Windowed is a customer channel whose provider limits how long after the
// customer's last message kefu may write (WhatsApp 24 h, WeChat 48 h).
type Windowed interface {
	ReplyWindow() time.Duration
}

// Runner is a channel with a loop. Run blocks until ctx is done or the loop
// fails, and returns nil after a clean stop.
type Runner interface {
	Run(ctx context.Context) error
}

// Exclusive is a Runner whose loop, as configured, must run on one node of
// a cluster at a time: Telegram's long polling (Telegram refuses a second
// poller), Slack's Socket Mode. When Exclusive reports true, the node runs
// Run under the cluster lease "run.NAME" (bridge.RunLeased) instead of on
// every node: Run is then called on the node that holds the lease, and
// called again, on this node or another, after its lease moved, so it must
// be safe to call more than once. A Runner that is not Exclusive (or
// reports false) runs on every node, once.
type Exclusive interface {
	Exclusive() bool
}

// Checker is a channel that can tell whether it is usable.
type Checker interface {
	Check(ctx context.Context) error
}

// Deps are what every channel may use. One Deps is shared by all instances.
type Deps struct {
	Service *core.Service
	// Bus carries updates between nodes: a channel that serves sockets
	// subscribes to bridge.UpdatesTopic through Bus.FanoutSubscriber.
	Bus bridge.Bus
	// Media keeps images and files: uploads, and provider media fetched as
	// soon as it arrives (provider URLs expire).
	Media     *media.Store
	Logger    *slog.Logger
	PublicURL string // server.public_url
	NodeID    string
	// TrustedProxies are server.trusted_proxies: the peers whose
	// X-Forwarded-For is believed (see httpx.ClientIP).
	TrustedProxies []netip.Prefix
	// PushTopics are the topics (app bundle ids) of the enabled pushers
	// (push.apns.topic): the only ones a customer's app may register a
	// device for. Empty: push is off.
	PushTopics []string
}

// Factory builds an instance from its decoded, validated config section.
type Factory func(name string, cfg config.Section, deps Deps) (Channel, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a channel type known to the config loader and to New.
// newConfig returns the type's config struct filled with its defaults. It
// panics when the type is registered twice.
func Register(typ string, newConfig func() config.Section, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("channels: type registered twice: " + typ)
	}
	factories[typ] = f
	config.RegisterChannel(typ, newConfig)
}

// Types lists the registered channel types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	ts := make([]string, 0, len(factories))
	for t := range factories {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// New builds an enabled channel instance.
func New(inst *config.ChannelInstance, deps Deps) (Channel, error) {
	mu.RLock()
	f, ok := factories[inst.Type]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("channel %s: unknown type %q", inst.Name, inst.Type)
	}
	ch, err := f(inst.Name, inst.Config, deps)
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", inst.Name, err)
	}
	return ch, nil
}
