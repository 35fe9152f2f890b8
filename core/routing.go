package core

import (
	"fmt"
	"slices"
	"sync"
)

// Strategy is how routing chooses among available agents.
type Strategy string

const (
	// RoundRobin takes available agents in turn (by ID), skipping those at capacity.
	RoundRobin Strategy = "round_robin"
	// LeastBusy takes the available agent with the fewest open conversations;
	// ties go to the one assigned least recently, then to the lowest ID.
	LeastBusy Strategy = "least_busy"
)

// ParseStrategy checks a configured strategy name.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case RoundRobin, LeastBusy:
		return Strategy(s), nil
	}
	return "", fmt.Errorf("%w: unknown routing strategy %q", ErrInvalid, s)
}

// Candidate is an available agent and their current load.
type Candidate struct {
	AgentID int64
	Open    int // open conversations assigned to the agent
}

// Picker orders candidates for an assignment. It remembers whom it gave work
// to last, for round robin turns and least-busy tie breaks. Safe for
// concurrent use.
type Picker struct {
	strategy Strategy
	mu       sync.Mutex
	last     int64            // round robin: the agent assigned last
	tick     uint64           // least busy: assignment counter
	lastTick map[int64]uint64 // least busy: when each agent was last assigned
}

// NewPicker returns a Picker for the strategy.
func NewPicker(s Strategy) *Picker {
	return &Picker{strategy: s, lastTick: map[int64]uint64{}}
}

// Order returns the IDs of the candidates with room for one more conversation
// (Open < maxOpen; maxOpen ≤ 0 means no limit), in the order they should be
// tried. The caller tries them in turn (a store may still refuse one whose
// count changed) and reports the one that took the conversation to Assigned.
func (p *Picker) Order(cands []Candidate, maxOpen int) []int64 {
	open := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if maxOpen <= 0 || c.Open < maxOpen {
			open = append(open, c)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.strategy {
	case RoundRobin:
		slices.SortFunc(open, func(a, b Candidate) int { return cmpInt64(a.AgentID, b.AgentID) })
		// Rotate so the first agent after the last one served comes first.
		i, _ := slices.BinarySearchFunc(open, p.last+1, func(c Candidate, id int64) int { return cmpInt64(c.AgentID, id) })
		open = append(open[i:], open[:i]...)
	default:
		slices.SortFunc(open, func(a, b Candidate) int {
			if a.Open != b.Open {
				return a.Open - b.Open
			}
			if ta, tb := p.lastTick[a.AgentID], p.lastTick[b.AgentID]; ta != tb {
				if ta < tb {
					return -1
				}
				return 1
			}
			return cmpInt64(a.AgentID, b.AgentID)
		})
	}
	ids := make([]int64, len(open))
	for i, c := range open {
		ids[i] = c.AgentID
	}
	return ids
}

// Assigned records that agentID took a conversation.
func (p *Picker) Assigned(agentID int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = agentID
	p.tick++
	p.lastTick[agentID] = p.tick
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
