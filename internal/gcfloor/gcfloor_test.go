package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		live, scan, floor uint64
		want              int
	}{
		{0, 0, 64 * mb, 1600},           // before the first collection: 4 MB × 16 = 64 MB
		{1 * mb, 1 * mb, 64 * mb, 1600}, // the runtime's own minimum, 4 MB × 16, is the floor
		{1024, 1024, 64 * mb, 1600},
		{8 * mb, 10 * mb, 64 * mb, 560},  // 8 + 10 × 5.6 = 64 MB
		{30 * mb, 34 * mb, 64 * mb, 100}, // 30 + 34 = 64: the default reaches the floor
		{40 * mb, 45 * mb, 64 * mb, 100}, // above: the default, never less
		{80 * mb, 90 * mb, 64 * mb, 100},
		{0, 0, 2 * mb, 100}, // a floor under the runtime's minimum changes nothing
	} {
		if got := percentFor(tc.live, tc.scan, tc.floor); got != tc.want {
			t.Errorf("percentFor(%d, %d, %d) = %d, want %d", tc.live, tc.scan, tc.floor, got, tc.want)
		}
	}
}

// TestFloorSetsTheGoal checks the runtime's own heap goal after collections
// with the floor on, and that Stop restores GOGC=100.
func TestFloorSetsTheGoal(t *testing.T) {
	old := debug.SetGCPercent(basePercent)
	defer debug.SetGCPercent(old)
	const floor = 48 << 20
	f := Start(floor)
	defer f.Stop()
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	var got uint64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		runtime.GC() // the sentinel's finalizer adjusts after a collection
		time.Sleep(10 * time.Millisecond)
		metrics.Read(goal)
		got = goal[0].Value.Uint64()
		if f.Percent() > basePercent && got > floor*9/10 && got < floor*11/10 {
			break
		}
	}
	if got < floor*9/10 || got > floor*11/10 {
		t.Fatalf("heap goal %d MB with the floor at %d MB (percent %d)", got>>20, floor>>20, f.Percent())
	}
	f.Stop()
	if p := debug.SetGCPercent(basePercent); p != basePercent {
		t.Errorf("after Stop the GC percentage is %d, want %d", p, basePercent)
	}
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if f.Percent() != basePercent {
		t.Errorf("Percent after Stop = %d", f.Percent())
	}
}
