package core

import (
	"context"
	"slices"
	"sync"
)

// Presence knows which agents are available for routing. An agent is
// available while connected to the console, or after /on from an agent-side
// channel such as Work WeChat (until /off), unless they set themselves away.
//
// Implementations are safe for concurrent use. A clustered deployment shares
// presence between nodes; MemoryPresence serves one node (and tests).
type Presence interface {
	// Available returns the IDs of available agents, in ascending order.
	Available(ctx context.Context) ([]int64, error)
	// Connect records one live console connection of the agent; the returned
	// function ends it (calling it twice is harmless).
	Connect(agentID int64) (release func())
	// SetOn records /on (true) or /off (false) from an agent-side channel.
	SetOn(agentID int64, on bool)
	// SetAway marks the agent away (not routed to) or back.
	SetAway(agentID int64, away bool)
	// Connected reports whether the agent has a live console connection.
	Connected(agentID int64) bool
	// ConnectContact records one live realtime connection (WebSocket or
	// long poll) of a customer contact; the returned function ends it.
	ConnectContact(contactID int64) (release func())
	// ContactConnected reports whether the contact has a live realtime
	// connection.
	ContactConnected(contactID int64) bool
}

// PresenceWatcher is a Presence that tells when an agent may have become
// available (connected, /on, back from away), on this node or, for a
// clustered presence, on any node. The Service uses it to drain the queue.
// A Presence without it is only polled.
type PresenceWatcher interface {
	// OnChange sets the function called whenever an agent may have become
	// available; it replaces any earlier one. f is called outside the
	// presence's locks, possibly concurrently, and may call back into it.
	OnChange(f func(agentID int64))
}

// MemoryPresence is the in-process Presence.
type MemoryPresence struct {
	mu       sync.Mutex
	agents   map[int64]*agentPresence
	contacts map[int64]int // live connections per contact
	// changed, when set, is called (outside the lock) whenever an agent may
	// have become available.
	changed func(agentID int64)
}

type agentPresence struct {
	conns int
	on    bool
	away  bool
}

func (a *agentPresence) available() bool { return !a.away && (a.conns > 0 || a.on) }

// NewMemoryPresence returns an empty presence.
func NewMemoryPresence() *MemoryPresence {
	return &MemoryPresence{agents: map[int64]*agentPresence{}, contacts: map[int64]int{}}
}

// OnChange sets a function called whenever an agent may have become
// available. The Service uses it to drain the queue.
func (p *MemoryPresence) OnChange(f func(agentID int64)) {
	p.mu.Lock()
	p.changed = f
	p.mu.Unlock()
}

func (p *MemoryPresence) update(agentID int64, f func(*agentPresence)) {
	p.mu.Lock()
	a := p.agents[agentID]
	if a == nil {
		a = &agentPresence{}
		p.agents[agentID] = a
	}
	was := a.available()
	f(a)
	now := a.available()
	if a.conns == 0 && !a.on && !a.away {
		delete(p.agents, agentID)
	}
	changed := p.changed
	p.mu.Unlock()
	if changed != nil && now && !was {
		changed(agentID)
	}
}

// Available implements Presence.
func (p *MemoryPresence) Available(context.Context) ([]int64, error) {
	p.mu.Lock()
	ids := make([]int64, 0, len(p.agents))
	for id, a := range p.agents {
		if a.available() {
			ids = append(ids, id)
		}
	}
	p.mu.Unlock()
	slices.Sort(ids)
	return ids, nil
}

// Connect implements Presence.
func (p *MemoryPresence) Connect(agentID int64) func() {
	p.update(agentID, func(a *agentPresence) { a.conns++ })
	var once sync.Once
	return func() {
		once.Do(func() { p.update(agentID, func(a *agentPresence) { a.conns-- }) })
	}
}

// SetOn implements Presence.
func (p *MemoryPresence) SetOn(agentID int64, on bool) {
	p.update(agentID, func(a *agentPresence) { a.on = on })
}

// SetAway implements Presence.
func (p *MemoryPresence) SetAway(agentID int64, away bool) {
	p.update(agentID, func(a *agentPresence) { a.away = away })
}

// Connected implements Presence.
func (p *MemoryPresence) Connected(agentID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.agents[agentID]
	return a != nil && a.conns > 0
}

// ConnectContact implements Presence.
func (p *MemoryPresence) ConnectContact(contactID int64) func() {
	p.mu.Lock()
	p.contacts[contactID]++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.contacts[contactID]--; p.contacts[contactID] <= 0 {
				delete(p.contacts, contactID)
			}
			p.mu.Unlock()
		})
	}
}

// ContactConnected implements Presence.
func (p *MemoryPresence) ContactConnected(contactID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.contacts[contactID] > 0
}

var (
	_ Presence        = (*MemoryPresence)(nil)
	_ PresenceWatcher = (*MemoryPresence)(nil)
)
