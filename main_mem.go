package main

import (
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's target the exporter runs with
// unless GOGC is set: the heap may grow 50% beyond the live data between two
// collections instead of Go's default 100%.
//
// At a million fail2ban bans rows the live heap is about 95 MB, nearly all
// of it a handful of large pointer-free slices and maps (the engine's
// events, time index, bips rows and IP table). The collector marks a
// pointer-free object without scanning it, so a collection costs about the
// same at any heap size (a few milliseconds of CPU, see BENCHMARKS.md),
// while the headroom is paid in resident memory: with 100% the process
// peaks near 2x the live heap. A percentage, unlike a memory limit, never
// makes the collector run back to back when the data grows: the heap goal
// grows with it.
const defaultGCPercent = 50

// applyGCDefault sets defaultGCPercent unless the user chose a GC target
// with the GOGC environment variable (any value, "off" included). It reports
// whether it changed the setting.
func applyGCDefault(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	return true
}
