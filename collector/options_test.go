package collector

import (
	"strings"
	"testing"
	"time"
)

// TestParseWindows checks --bans.window's dialect (internal/duration: Go
// durations, then Prometheus ones) and the rules ParseWindows adds.
func TestParseWindows(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name    string
		values  []string
		want    []Window
		wantErr string
	}{
		{name: "go fraction", values: []string{"1.5h"}, want: []Window{{"1.5h", 90 * time.Minute}}},
		{name: "go hours", values: []string{"36h"}, want: []Window{{"36h", 36 * time.Hour}}},
		{name: "go minutes", values: []string{"90m"}, want: []Window{{"90m", 90 * time.Minute}}},
		{name: "prometheus day", values: []string{"7d"}, want: []Window{{"7d", 7 * day}}},
		{name: "prometheus week", values: []string{"1w"}, want: []Window{{"1w", 7 * day}}},
		{name: "prometheus year", values: []string{"1y"}, want: []Window{{"1y", 365 * day}}},
		{name: "prometheus combined", values: []string{"1d12h"}, want: []Window{{"1d12h", 36 * time.Hour}}},
		{name: "spaces trimmed", values: []string{" 30d "}, want: []Window{{"30d", 30 * day}}},
		{name: "defaults", values: []string{"24h", "7d", "30d", "365d"},
			want: []Window{{"24h", day}, {"7d", 7 * day}, {"30d", 30 * day}, {"365d", 365 * day}}},
		{name: "empty", values: []string{""}, wantErr: "empty duration"},
		{name: "no unit", values: []string{"7"}, wantErr: "invalid duration"},
		{name: "unknown unit", values: []string{"7x"}, wantErr: "invalid duration"},
		{name: "prometheus units out of order", values: []string{"12h1d"}, wantErr: "invalid duration"},
		{name: "fraction of a prometheus unit", values: []string{"1.5d"}, wantErr: "invalid duration"},
		{name: "zero", values: []string{"0s"}, wantErr: "must be positive"},
		{name: "negative", values: []string{"-1h"}, wantErr: "must be positive"},
		{name: "fraction of a second", values: []string{"1500ms"}, wantErr: "whole number of seconds"},
		{name: "twice", values: []string{"7d", "7d"}, wantErr: "given twice"},
		{name: "none", values: nil, wantErr: "at least one window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWindows(tt.values)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseWindows(%q) = %v, %v; want an error containing %q", tt.values, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWindows(%q): %v", tt.values, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseWindows(%q) = %v, want %v", tt.values, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("ParseWindows(%q)[%d] = %v, want %v", tt.values, i, got[i], tt.want[i])
				}
			}
		})
	}
}
