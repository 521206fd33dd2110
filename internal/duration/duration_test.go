package duration

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		// Go durations, fractions and sub-second units included.
		{"1.5h", 90 * time.Minute, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"90m", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"-5s", -5 * time.Second, ""},
		{"0", 0, ""},
		{" 24h ", day, ""},
		// Prometheus durations: d, w, y, alone or combined.
		{"7d", 7 * day, ""},
		{"2w", 14 * day, ""},
		{"1y", 365 * day, ""},
		{"400d", 400 * day, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1y2w", 379 * day, ""},
		// Errors.
		{"", 0, "empty duration"},
		{"   ", 0, "empty duration"},
		{"1.5d", 0, "invalid duration"},
		{"7 days", 0, "invalid duration"},
		{"d", 0, "invalid duration"},
		{"10x", 0, "invalid duration"},
		{"1h1d", 0, "invalid duration"}, // Prometheus units must go from large to small
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}
