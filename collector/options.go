package collector

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
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

// ParseWindows parses --bans.window values: Go or Prometheus durations
// ("24h", "7d", "1y", "90m"). Duplicates and non-positive lengths are errors.
func ParseWindows(values []string) ([]Window, error) {
	seen := make(map[string]bool, len(values))
	windows := make([]Window, 0, len(values))
	for _, v := range values {
		v = strings.TrimSpace(v)
		d, err := parseDuration(v)
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

// ParseDuration parses a duration as --bans.window does: Go durations plus
// the units d (24h), w (7d) and y (365d), alone or combined ("1d12h").
func ParseDuration(s string) (time.Duration, error) { return parseDuration(strings.TrimSpace(s)) }

// Longest is the length of the longest of windows (0 when none).
func Longest(windows []Window) time.Duration {
	var l time.Duration
	for _, w := range windows {
		l = max(l, w.Length)
	}
	return l
}

// parseDuration accepts Go durations plus the units d (24h), w (7d) and y
// (365d), alone or combined ("1d12h").
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %w", s, err)
		}
		var unit time.Duration
		switch rest[i:j] {
		case "y":
			unit = 365 * 24 * time.Hour
		case "w":
			unit = 7 * 24 * time.Hour
		case "d":
			unit = 24 * time.Hour
		case "h":
			unit = time.Hour
		case "m":
			unit = time.Minute
		case "s":
			unit = time.Second
		default:
			return 0, fmt.Errorf("invalid unit %q in duration %q (use s, m, h, d, w or y)", rest[i:j], s)
		}
		if n > int64(200*365*24*time.Hour/unit) {
			return 0, fmt.Errorf("duration %q too long", s)
		}
		total += time.Duration(n) * unit
		rest = rest[j:]
	}
	return total, nil
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
}
