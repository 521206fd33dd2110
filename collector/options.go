package collector

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/duration"
)

// DefaultDBPath is where Debian's fail2ban keeps its database.
const DefaultDBPath = "/var/lib/fail2ban/fail2ban.sqlite3"

// Window is one trailing window of fail2ban_recent_bans.
type Window struct {
	// Label is the value of the window label, as the user wrote it ("7d").
	Label string
	// Length is how far back the window reaches.
	Length time.Duration
}

// ParseWindows parses --bans.window values with internal/duration: Go
// durations ("36h", "1.5h", "90m") or Prometheus ones ("7d", "1w", "1y",
// "1d12h"). Duplicates, non-positive lengths and fractions of a second are
// errors.
func ParseWindows(values []string) ([]Window, error) {
	seen := make(map[string]bool, len(values))
	windows := make([]Window, 0, len(values))
	for _, v := range values {
		v = strings.TrimSpace(v)
		d, err := duration.Parse(v)
		if err != nil {
			return nil, fmt.Errorf("window %q: %w", v, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("window %q: must be positive", v)
		}
		if d%time.Second != 0 {
			return nil, fmt.Errorf("window %q: must be a whole number of seconds", v)
		}
		if seen[v] {
			return nil, fmt.Errorf("window %q given twice", v)
		}
		seen[v] = true
		windows = append(windows, Window{Label: v, Length: d})
	}
	if len(windows) == 0 {
		return nil, fmt.Errorf("at least one window is required")
	}
	return windows, nil
}

// Longest is the length of the longest of windows (0 when none).
func Longest(windows []Window) time.Duration {
	var l time.Duration
	for _, w := range windows {
		l = max(l, w.Length)
	}
	return l
}

// Options configure an Exporter.
type Options struct {
	// DBPath is fail2ban's database; empty turns the DB part off.
	DBPath string
	// DefaultBantime is assumed for schema-2 databases, which have no
	// bantime column.
	DefaultBantime time.Duration
	// Windows are the trailing windows of fail2ban_recent_bans.
	Windows []Window
	// ChunkSize is the maximum number of rows read per read transaction.
	ChunkSize int
	// Logger receives one line per state change.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Tests inject a clock.
	Now func() time.Time
	// Archive is the ban archive (nil: off). With it, the windows count the
	// archived events united with fail2ban's bans: events stay counted
	// after fail2ban deleted their rows (purge, unbanip) until they leave
	// the longest window. The Exporter offers every ban event it reads to
	// the archive (Add on a refresh, AddWait in the background for the
	// startup read) and never writes or prunes it; the caller runs
	// Archive.Run from before the first Refresh until after Close.
	Archive *archive.Store
	// IntegrityCheckInterval is how often RunIntegrityCheck reads the
	// whole database for damaged pages; 0 turns the check off.
	IntegrityCheckInterval time.Duration
	// WatchInterval is how often RunWatch looks for fail2ban's writes
	// between scrapes; 0 turns it off (rows are then read by scrapes only).
	WatchInterval time.Duration
}
