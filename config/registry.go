package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Section is one component's config block (a channel type or a pusher).
// Implementations are pointers to structs whose fields carry yaml tags and a
// comment each. Validate reports every problem at once, as *FieldError values
// joined with errors.Join (see Required, OneOf, URL, Errorf and Prefix); it
// is called for every instance after decoding, and for a disabled one only
// the problems not marked OnlyEnabled count (Required, MarkOnlyEnabled).
type Section interface {
	Validate() error
}

// SingleInstance is implemented by the section of a channel type of which
// at most one instance may be enabled (the web channel serves fixed paths).
type SingleInstance interface {
	SingleInstance()
}

// ProcessShared is implemented by the section of a channel type whose
// enabled instances must agree on one key in a process (WeChat's api_base:
// the library's HTTP client is the process's). Value is the key's value as
// configured, normalized so that equal settings compare equal.
type ProcessShared interface {
	ProcessShared() (key, value string)
}

// PushApp is implemented by a pusher's section: PushTopic is the app it
// pushes for. Two enabled pushers may not push for the same app.
type PushApp interface {
	PushTopic() string
}

// PublicURLUser is implemented by a section that may need
// server.public_url: NeedsPublicURL names the key that, as configured,
// needs it ("set_webhook"), or returns "".
type PublicURLUser interface {
	NeedsPublicURL() string
}

// Defaulter is implemented by list items and map values that have defaults
// of their own: the loader calls SetDefaults on each new item before decoding
// its keys into it. (A section's top level gets its defaults from the
// constructor passed to RegisterChannel or RegisterPusher.)
type Defaulter interface {
	SetDefaults()
}

// ChannelInstance is one entry under channels:.
type ChannelInstance struct {
	Name    string  // instance name: the key under channels:, used in URLs (/webhooks/NAME)
	Type    string  // registered channel type; defaults to Name
	Enabled bool    // whether the instance runs; a disabled one is checked for every problem but those only of a running one (FieldError.OnlyEnabled)
	Config  Section // the type's own section, as returned by its registered constructor and then decoded
	Line    int     // line of the instance's key in the file, 0 when not from a file
}

// PusherInstance is one entry under push:.
type PusherInstance struct {
	Name    string  // key under push:, normally the pusher type
	Type    string  // registered pusher type; defaults to Name
	Enabled bool    // whether the pusher runs; a disabled one is checked like a disabled channel
	Config  Section // the type's own section, as returned by its registered constructor and then decoded
	Line    int     // line of the entry's key in the file, 0 when not from a file
}

// instanceName is what channel and push keys and registered types must look like.
var instanceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// registry maps a component type to the constructor of its section.
type registry struct {
	kind string // "channel" or "pusher", for messages
	mu   sync.RWMutex
	m    map[string]func() Section
}

var (
	channelRegistry = &registry{kind: "channel"}
	pusherRegistry  = &registry{kind: "pusher"}
)

// RegisterChannel makes channel type typ known to the loader. newConfig
// returns a new section pre-filled with the type's defaults; it must be a
// pointer to a struct, and its keys must not include "type" or "enabled",
// which the loader handles for every instance. Channel packages call
// RegisterChannel from init. It panics if typ is registered twice, is not a
// valid instance name, or newConfig breaks these rules.
func RegisterChannel(typ string, newConfig func() Section) {
	channelRegistry.register(typ, newConfig)
}

// RegisterPusher is RegisterChannel for sections under push:.
func RegisterPusher(typ string, newConfig func() Section) {
	pusherRegistry.register(typ, newConfig)
}

// ChannelTypes returns the registered channel types, sorted.
func ChannelTypes() []string { return channelRegistry.types() }

// PusherTypes returns the registered pusher types, sorted.
func PusherTypes() []string { return pusherRegistry.types() }

func (r *registry) register(typ string, newConfig func() Section) {
	if !instanceName.MatchString(typ) {
		panic(fmt.Sprintf("config: %s type %q must match %s", r.kind, typ, instanceName))
	}
	if newConfig == nil {
		panic(fmt.Sprintf("config: %s type %q registered with a nil constructor", r.kind, typ))
	}
	v := reflect.ValueOf(newConfig())
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("config: %s type %q: constructor must return a non-nil pointer to a struct, got %s", r.kind, typ, v.Type()))
	}
	for _, f := range fieldsOf(v.Elem()) {
		if f.name == "type" || f.name == "enabled" {
			panic(fmt.Sprintf("config: %s type %q: section must not have a %q key (the loader handles it)", r.kind, typ, f.name))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[typ]; dup {
		panic(fmt.Sprintf("config: %s type %q registered twice", r.kind, typ))
	}
	if r.m == nil {
		r.m = make(map[string]func() Section)
	}
	r.m[typ] = newConfig
}

func (r *registry) lookup(typ string) (func() Section, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.m[typ]
	return f, ok
}

func (r *registry) types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ts := make([]string, 0, len(r.m))
	for t := range r.m {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// EnabledChannels returns the enabled channel instances, sorted by name.
func (c *Config) EnabledChannels() []*ChannelInstance { return c.channels(true) }

// channels returns the channel instances (only the enabled ones, if
// enabled), sorted by name.
func (c *Config) channels(enabled bool) []*ChannelInstance {
	var out []*ChannelInstance
	for _, ci := range c.Channels {
		if ci.Enabled || !enabled {
			out = append(out, ci)
		}
	}
	slices.SortFunc(out, func(a, b *ChannelInstance) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// EnabledPushers returns the enabled pushers, sorted by name.
func (c *Config) EnabledPushers() []*PusherInstance { return c.pushers(true) }

// pushers returns the pushers (only the enabled ones, if enabled), sorted
// by name.
func (c *Config) pushers(enabled bool) []*PusherInstance {
	var out []*PusherInstance
	for _, pi := range c.Push {
		if pi.Enabled || !enabled {
			out = append(out, pi)
		}
	}
	slices.SortFunc(out, func(a, b *PusherInstance) int { return strings.Compare(a.Name, b.Name) })
	return out
}
