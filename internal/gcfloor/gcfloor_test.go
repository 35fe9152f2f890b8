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

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// settle runs collections and lets the floor's finalizer adjust after each.
func settle() {
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

var keep [][]byte

// TestFloorFollowsTheLiveHeap checks the runtime's own heap goal as the live
// heap grows past the floor and shrinks again: only the finalizer, re-armed
// after every collection, can follow it.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	old := debug.SetGCPercent(basePercent)
	defer debug.SetGCPercent(old)
	limit := debug.SetMemoryLimit(-1)
	const floor = 64 << 20
	f := Start(floor)
	defer f.Stop()
	settle()
	if g := heapGoal(); f.Percent() <= basePercent || g < floor*9/10 || g > floor*11/10 {
		t.Errorf("small heap: percent %d, goal %d MB; want the floor, %d MB", f.Percent(), g>>20, floor>>20)
	}
	if l := debug.SetMemoryLimit(-1); l != 2*floor {
		t.Errorf("memory limit %d MB with the floor raised, want %d", l>>20, 2*floor>>20)
	}
	for range 40 {
		keep = append(keep, make([]byte, 1<<20))
	}
	settle()
	if g := heapGoal(); f.Percent() != basePercent || g > 100<<20 {
		t.Errorf("40 MB live: percent %d, goal %d MB; want %d, about 80 MB", f.Percent(), g>>20, basePercent)
	}
	if l := debug.SetMemoryLimit(-1); l != limit {
		t.Errorf("memory limit %d at the default percentage, want the original %d", l, limit)
	}
	keep = nil
	settle()
	if g := heapGoal(); f.Percent() <= basePercent || g < floor*9/10 || g > floor*11/10 {
		t.Errorf("live heap freed: percent %d, goal %d MB; want the floor", f.Percent(), g>>20)
	}
	f.Stop()
	if p := debug.SetGCPercent(basePercent); p != basePercent {
		t.Errorf("after Stop the GC percentage is %d, want %d", p, basePercent)
	}
	if l := debug.SetMemoryLimit(-1); l != limit {
		t.Errorf("after Stop the memory limit is %d, want the original %d", l, limit)
	}
	settle()
	if f.Percent() != basePercent {
		t.Errorf("Percent after Stop = %d", f.Percent())
	}
}

// TestFloorLateAdjustmentIsBounded holds up the finalizer goroutine, as any
// slow finalizer would, while the live heap grows: the raised percentage
// still applies, and the memory limit keeps the goal near twice the floor
// instead of 17 times the live heap. Last in the file: it blocks finalizers.
func TestFloorLateAdjustmentIsBounded(t *testing.T) {
	old := debug.SetGCPercent(basePercent)
	defer debug.SetGCPercent(old)
	const floor = 64 << 20
	f := Start(floor)
	defer f.Stop()
	settle()
	block, started := make(chan struct{}), make(chan struct{})
	runtime.SetFinalizer(&struct{ _ [64]byte }{}, func(any) { close(started); <-block })
	runtime.GC()
	<-started
	defer close(block)
	for range 40 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.GC()
	if g := heapGoal(); g > 2*floor+16<<20 {
		t.Errorf("40 MB live with the adjustment held up: goal %d MB, want at most about %d", g>>20, 2*floor>>20)
	}
	keep = nil
}
