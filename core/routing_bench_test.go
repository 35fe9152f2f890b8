package core

import (
	"fmt"
	"testing"
)

// BenchmarkPickerOrder is routing's hot path: ordering the available agents
// for one assignment and recording who took it, as each new conversation
// does, for teams of 10 and 100 agents with varied loads.
func BenchmarkPickerOrder(b *testing.B) {
	for _, s := range []Strategy{RoundRobin, LeastBusy} {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("%s/agents=%d", s, n), func(b *testing.B) {
				cands := make([]Candidate, n)
				for i := range cands {
					cands[i] = Candidate{AgentID: int64(n - i), Open: (i * 7) % 5} // unsorted, mixed loads
				}
				p := NewPicker(s)
				b.ReportAllocs()
				for b.Loop() {
					ids := p.Order(cands, 4)
					if len(ids) == 0 {
						b.Fatal("no candidate")
					}
					p.Assigned(ids[0])
				}
			})
		}
	}
}
