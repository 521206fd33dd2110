package main

import (
	"runtime/debug"
	"testing"
)

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
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GC percent %d, want %d", got, defaultGCPercent)
	}
}
