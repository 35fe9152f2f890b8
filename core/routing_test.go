package core

import (
	"slices"
	"testing"
)

func TestPickerOrder(t *testing.T) {
	tests := []struct {
		name     string
		strategy Strategy
		assigned []int64 // Assigned calls before Order, in order
		cands    []Candidate
		maxOpen  int
		want     []int64
	}{
		{
			name:     "least busy prefers fewest open",
			strategy: LeastBusy,
			cands:    []Candidate{{1, 3}, {2, 1}, {3, 2}},
			maxOpen:  8,
			want:     []int64{2, 3, 1},
		},
		{
			name:     "least busy skips agents at capacity",
			strategy: LeastBusy,
			cands:    []Candidate{{1, 2}, {2, 8}, {3, 7}},
			maxOpen:  8,
			want:     []int64{1, 3},
		},
		{
			name:     "least busy tie goes to the one assigned least recently",
			strategy: LeastBusy,
			assigned: []int64{1, 3},
			cands:    []Candidate{{1, 1}, {2, 1}, {3, 1}},
			maxOpen:  8,
			want:     []int64{2, 1, 3},
		},
		{
			name:     "everyone full",
			strategy: LeastBusy,
			cands:    []Candidate{{1, 2}, {2, 2}},
			maxOpen:  2,
			want:     []int64{},
		},
		{
			name:     "no limit",
			strategy: LeastBusy,
			cands:    []Candidate{{1, 100}, {2, 50}},
			maxOpen:  0,
			want:     []int64{2, 1},
		},
		{
			name:     "round robin starts at lowest id",
			strategy: RoundRobin,
			cands:    []Candidate{{3, 0}, {1, 5}, {2, 0}},
			maxOpen:  8,
			want:     []int64{1, 2, 3},
		},
		{
			name:     "round robin continues after the last assigned",
			strategy: RoundRobin,
			assigned: []int64{2},
			cands:    []Candidate{{3, 0}, {1, 0}, {2, 0}},
			maxOpen:  8,
			want:     []int64{3, 1, 2},
		},
		{
			name:     "round robin wraps and skips full agents",
			strategy: RoundRobin,
			assigned: []int64{3},
			cands:    []Candidate{{1, 8}, {2, 0}, {3, 0}},
			maxOpen:  8,
			want:     []int64{2, 3},
		},
		{
			name:     "round robin after an agent who went offline",
			strategy: RoundRobin,
			assigned: []int64{4},
			cands:    []Candidate{{1, 0}, {5, 0}, {9, 0}},
			maxOpen:  8,
			want:     []int64{5, 9, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPicker(tt.strategy)
			for _, id := range tt.assigned {
				p.Assigned(id)
			}
			got := p.Order(tt.cands, tt.maxOpen)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRoundRobinTurns(t *testing.T) {
	p := NewPicker(RoundRobin)
	cands := []Candidate{{1, 0}, {2, 0}, {3, 0}}
	var got []int64
	for range 7 {
		id := p.Order(cands, 0)[0]
		p.Assigned(id)
		got = append(got, id)
	}
	if want := []int64{1, 2, 3, 1, 2, 3, 1}; !slices.Equal(got, want) {
		t.Fatalf("turns = %v, want %v", got, want)
	}
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []string{"round_robin", "least_busy"} {
		if _, err := ParseStrategy(s); err != nil {
			t.Errorf("ParseStrategy(%q): %v", s, err)
		}
	}
	if _, err := ParseStrategy("fastest"); err == nil {
		t.Error("ParseStrategy(fastest) succeeded")
	}
}

func TestMessageStatusAdvances(t *testing.T) {
	tests := []struct {
		from, to MessageStatus
		want     bool
	}{
		{MsgPending, MsgSent, true},
		{MsgSent, MsgRead, true},
		{MsgDelivered, MsgSent, false},
		{MsgRead, MsgDelivered, false},
		{MsgRead, MsgFailed, false},
		{MsgSent, MsgFailed, true},
		{MsgFailed, MsgSent, false},
		{MsgFailed, MsgFailed, false},
		{MsgSent, MsgSent, false},
		{MsgSent, "bogus", false},
	}
	for _, tt := range tests {
		if got := tt.from.Advances(tt.to); got != tt.want {
			t.Errorf("%s → %s: Advances = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

func TestMemoryPresence(t *testing.T) {
	p := NewMemoryPresence()
	var became []int64
	p.OnChange(func(id int64) { became = append(became, id) })
	release := p.Connect(1)
	p.SetOn(2, true)
	p.SetOn(3, true)
	p.SetAway(3, true)
	got, _ := p.Available(t.Context())
	if want := []int64{1, 2}; !slices.Equal(got, want) {
		t.Fatalf("Available = %v, want %v", got, want)
	}
	release()
	release() // harmless twice
	p.SetOn(2, false)
	p.SetAway(3, false)
	got, _ = p.Available(t.Context())
	if want := []int64{3}; !slices.Equal(got, want) {
		t.Fatalf("Available after changes = %v, want %v", got, want)
	}
	if want := []int64{1, 2, 3, 3}; !slices.Equal(became, want) { // 3: on, then back from away
		t.Fatalf("became available = %v, want %v", became, want)
	}
	if p.Connected(1) {
		t.Fatal("agent 1 still connected after release")
	}
}
