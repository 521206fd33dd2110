package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestGCPercentFor(t *testing.T) {
	const mb = 1 << 20
	cases := []struct {
		name string
		live uint64
		want int
	}{
		{"no live heap yet", 0, maxGCPercent},
		{"small heap: the most headroom", 5 * mb, maxGCPercent},
		{"at the headroom twice over", 2 * gcHeadroom, maxGCPercent},
		{"between: the headroom", 4 * gcHeadroom, 25},
		{"a million rows: the headroom", 90 * mb, 8},
		{"ten million rows: the floor", 900 * mb, minGCPercent},
		{"beyond: the floor", 4000 * mb, minGCPercent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := gcPercentFor(tc.live); got != tc.want {
				t.Errorf("gcPercentFor(%d MB) = %d, want %d", tc.live/mb, got, tc.want)
			}
		})
	}
}

func TestApplyGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	env := map[string]string{"GOGC": "200"}
	if applyGCDefault(func(k string) string { return env[k] }) {
		t.Error("overrode the user's GOGC")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d after a user GOGC, want it untouched (100)", got)
	}
	env = map[string]string{"GOGC": "off"}
	if applyGCDefault(func(k string) string { return env[k] }) {
		t.Error("overrode GOGC=off")
	}
	if !applyGCDefault(func(string) string { return "" }) {
		t.Error("no default applied without GOGC")
	}
	if got := debug.SetGCPercent(maxGCPercent); got != maxGCPercent {
		t.Errorf("GC percent %d before any collection, want %d", got, maxGCPercent)
	}
}

// TestGCTunerFollowsTheLiveHeap keeps 64 MB live: after a collection the
// tuner lowers the percentage to the headroom over it.
func TestGCTunerFollowsTheLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(maxGCPercent)
	defer debug.SetGCPercent(prev)
	live := make([]byte, 64<<20)
	for i := range live {
		live[i] = byte(i)
	}
	tuner := &gcTuner{percent: maxGCPercent}
	armAfterGC(tuner.tune)
	want := gcPercentFor(64 << 20)
	if want >= maxGCPercent {
		t.Fatalf("64 MB is no test of the tuner: %d%%", want)
	}
	testkit.EventuallyTrue(t, 10*time.Second, "the tuner lowers the GC percentage for a 64 MB live heap", func() bool {
		runtime.GC()
		p := debug.SetGCPercent(maxGCPercent) // reads the tuner's value
		debug.SetGCPercent(p)
		return p <= want
	})
	runtime.KeepAlive(live)
}
