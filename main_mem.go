package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// The garbage collector's target. Go's GOGC is a percentage of the live
// heap: the heap may grow that much beyond the live data before the next
// collection. The exporter's live heap is nearly all a handful of large
// pointer-free tables (the engine's bans rows, ban events, bips rows and
// indexes: ≈ 90 MB at a million fail2ban bans rows, ≈ 900 MB at ten
// million) that a collection marks without scanning, so a collection costs
// about the same few milliseconds at any size; the garbage between two
// collections is what a read or a scrape allocates, which does not grow with
// the tables. A fixed percentage pays for headroom in proportion to the
// tables instead: GOGC=50 let a million rows peak near 1.5 × 90 MB of heap,
// and ten million near 1.35 GB.
//
// So unless GOGC is set, the exporter aims at gcHeadroom of garbage: after
// every collection it sets the percentage to gcHeadroom over the live heap,
// within [minGCPercent, maxGCPercent]. Small heaps keep maxGCPercent (a few
// MB either way); from ≈ 800 MB of live heap (ten million rows) on, the
// floor of 1 %. A floor of 10 % kept ≈ 100 MB of garbage at ten million
// rows; 1 % took the first start's peak there from 1,273 to 1,180 MiB (one
// run each) for ≈ 700 collections in the first 80 s, 5 s of CPU in all.
// 8 MiB rather than 16 took ≈ 6 MiB off the first start's peak
// at a million rows; a collection marks the tables without scanning them,
// so collecting twice as often costs little. A percentage, unlike a memory limit,
// never makes the collector run back to back when the data grows: the goal
// grows with it. BENCHMARKS.md has the measurements.
const (
	gcHeadroom   = 8 << 20
	minGCPercent = 1
	maxGCPercent = 50
)

// gcPercentFor is the GC percentage for a live heap of live bytes.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(gcHeadroom*100/live, minGCPercent), maxGCPercent))
}

// applyGCDefault starts the GC tuning above unless the user chose a GC
// target with the GOGC environment variable (any value, "off" included). It
// reports whether it did. GOMEMLIMIT, when set, still bounds the heap on
// top of it.
func applyGCDefault(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	t := &gcTuner{percent: maxGCPercent}
	debug.SetGCPercent(maxGCPercent)
	armAfterGC(t.tune)
	return true
}

// gcTuner sets the GC percentage from the live heap.
type gcTuner struct {
	percent int
	sample  [1]metrics.Sample
}

// tune runs after each collection (on the finalizer goroutine, one at a
// time).
func (t *gcTuner) tune() {
	t.sample[0].Name = "/gc/heap/live:bytes"
	metrics.Read(t.sample[:])
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if p := gcPercentFor(t.sample[0].Value.Uint64()); p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
}

// gcSentinel is an object that only a finalizer refers to: it becomes
// garbage at once, so its finalizer runs after the next collection. It
// holds a pointer so it is never batched with other objects by the tiny
// allocator.
type gcSentinel struct{ _ *byte }

// armAfterGC calls f after every garbage collection from now on, for the
// life of the process.
func armAfterGC(f func()) {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		f()
		armAfterGC(f)
	})
}
