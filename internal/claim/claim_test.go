package claim

import (
	"sync"
	"testing"
)

// Exactly one of Start and Abandon wins, whatever the order or the race.
func TestExactlyOneSideWins(t *testing.T) {
	var c Claim
	if !c.Start() || c.Abandon() || c.Start() {
		t.Fatal("after Start: Abandon and a second Start must fail")
	}
	var d Claim
	if !d.Abandon() || d.Start() {
		t.Fatal("after Abandon: Start must fail")
	}
	for range 1000 {
		var c Claim
		var wg sync.WaitGroup
		var started, abandoned bool
		wg.Go(func() { started = c.Start() })
		wg.Go(func() { abandoned = c.Abandon() })
		wg.Wait()
		if started == abandoned {
			t.Fatalf("Start %v, Abandon %v: want exactly one", started, abandoned)
		}
	}
}
