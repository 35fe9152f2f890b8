// Package gcfloor keeps Go's garbage collector from running while the heap
// is small.
//
// With the default GOGC=100 the collector runs whenever the heap has doubled
// since the last collection, and aims no lower than 4 MB. A kefu node's live
// heap is small (1–2 MB while serving 5,000 messages/s), so under load it
// collected every 35 ms or so: 30 cycles a second, each with its write
// barriers, mark assists and two short stops of the world, and these showed
// in the open loop's latency (BENCHMARKS.md). With a floor the heap grows to
// the floor before a collection; once twice the live heap is past the floor,
// GOGC=100 applies as usual, so large heaps (tens of thousands of idle
// sockets) are not touched.
//
// After each collection the floor sets the GC percentage so that the next
// one starts when the heap reaches the floor (debug.SetGCPercent, which does
// not stop the world). That percentage (up to 1,600) still applies if the
// live heap grows before the next adjustment, which comes from a finalizer
// and may be late: the goal would then be 17 times the new live heap. So
// while the percentage is raised, a memory limit of twice the floor caps it
// (debug.SetMemoryLimit), or the operator's GOMEMLIMIT if lower; at the
// default percentage the operator's limit is back.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// basePercent is the GC percentage once the live heap is large.
const basePercent = 100

// The runtime's goal for the next collection is live + (live + stacks +
// globals) × percent / 100, with these three measured by the last one.
var sampled = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// firstGoal is the runtime's smallest heap goal under GOGC=100; it scales
// with the percentage.
const firstGoal = 4 << 20

// Floor keeps the collector from running before the heap reaches its size.
type Floor struct {
	bytes uint64

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
	percent int
	limit   int64 // the memory limit before Start (GOMEMLIMIT, or none)
}

// Start sets a floor of bytes and returns it; Stop removes it.
func Start(bytes uint64) *Floor {
	f := &Floor{bytes: bytes, percent: basePercent, limit: debug.SetMemoryLimit(-1)}
	for _, name := range sampled {
		f.sample = append(f.sample, metrics.Sample{Name: name})
	}
	f.adjust()
	f.arm()
	return f
}

// Percent returns the GC percentage the floor set last.
func (f *Floor) Percent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

// Stop removes the floor and restores GOGC=100 and the memory limit.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		f.set(basePercent)
	}
}

// set sets the GC percentage p, and the memory limit that goes with it.
func (f *Floor) set(p int) {
	f.percent = p
	debug.SetGCPercent(p)
	limit := f.limit
	if p > basePercent {
		limit = min(limit, int64(2*f.bytes))
	}
	debug.SetMemoryLimit(limit)
}

// sentinel is an object nobody keeps: its finalizer runs once after each
// collection. Large enough not to share a tiny-allocator block, whose
// finalizers may never run.
type sentinel struct{ _ [32]byte }

func (f *Floor) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		if f.adjust() {
			f.arm()
		}
	})
}

// adjust sets the percentage for the live heap measured by the last
// collection. It reports false once the floor is stopped.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.sample)
	var v [3]uint64
	for i, s := range f.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	p := percentFor(v[0], v[0]+v[1]+v[2], f.bytes)
	if p != f.percent {
		f.set(p)
	}
	return true
}

// percentFor is the GC percentage that puts the next collection at floor
// bytes of heap, for a live heap of live bytes and a scannable total (live,
// stacks, globals) of scan bytes, and never below basePercent. The runtime
// never aims below firstGoal × percent / 100 either, which bounds it.
func percentFor(live, scan, floor uint64) int {
	most := floor * 100 / firstGoal
	if live == 0 || scan == 0 { // no collection yet
		return int(max(most, basePercent))
	}
	if live >= floor {
		return basePercent
	}
	return int(max(min((floor-live)*100/scan, most), basePercent))
}
