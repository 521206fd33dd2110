package f2bgen

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Permanent is the bantime fail2ban writes for a ban that never expires.
const Permanent = -1

// FilterKind selects what the log matches stored in a ban's data look like.
type FilterKind string

// The filters the default jails use; each yields log lines of its daemon.
const (
	FilterSSHD      FilterKind = "sshd"
	FilterNginxAuth FilterKind = "nginx-http-auth"
	FilterNginxBots FilterKind = "nginx-botsearch"
	FilterPostfix   FilterKind = "postfix"
	FilterDovecot   FilterKind = "dovecot"
	FilterRecidive  FilterKind = "recidive"
)

const (
	defaultMaxRetry = 5
	// defaultIncrMaxTS is the bantime.maxtime assumed when a jail sets none.
	defaultIncrMaxTS = 7 * 24 * 3600
)

// Jail describes one fail2ban jail of a generated database.
type Jail struct {
	Name string
	// Weight is the jail's relative share of (ip, jail) pairs, i.e. of bips rows.
	Weight float64
	// BanTime is the jail's bantime; a negative value means permanent (-1).
	BanTime time.Duration
	// Increment is bantime.increment: the n-th ban of an IP lasts
	// BanTime·2^(n-1), capped at MaxTime, and bancount counts n.
	Increment bool
	// MaxTime is bantime.maxtime for Increment jails (default one week).
	MaxTime time.Duration
	// Enabled is the jails.enabled flag (1 while the jail runs).
	Enabled bool
	// LogPath is the file the jail reads (the logs table).
	LogPath string
	// Filter selects the shape of the log matches in data.
	Filter FilterKind
	// MaxRetry is the number of failures that trigger a ban (data.failures).
	MaxRetry int
}

// Permanent reports whether the jail bans for ever (bantime -1).
func (j Jail) Permanent() bool { return j.BanTime < 0 }

// banTimeSeconds is the bantime column fail2ban writes for the n-th ban
// (n ≥ 1) of one IP in this jail, with the n-th bancount.
func (j Jail) banTimeSeconds(n int) (bantime int64, bancount int64) {
	if j.Permanent() {
		return Permanent, 1
	}
	base := int64(j.BanTime / time.Second)
	if !j.Increment {
		return base, 1
	}
	// fail2ban's default formula: ban.Time * (1<<(ban.Count if ban.Count<20 else 20)),
	// where ban.Count is the previous bancount, at least ban.Time, at most maxtime.
	prev := min(n-1, 20)
	bt := base << prev
	maxTime := int64(j.MaxTime / time.Second)
	if maxTime <= 0 {
		maxTime = defaultIncrMaxTS
	}
	return max(base, min(bt, maxTime)), int64(n)
}

// DefaultJails are six jails of a typical mail and web server: sshd and
// postfix with bantime.increment, nginx and dovecot with fixed bantimes, and
// recidive banning permanently.
func DefaultJails() []Jail {
	return []Jail{
		{Name: "sshd", Weight: 0.44, BanTime: 10 * time.Minute, Increment: true, MaxTime: 7 * 24 * time.Hour, Enabled: true, LogPath: "/var/log/auth.log", Filter: FilterSSHD, MaxRetry: 5},
		{Name: "nginx-botsearch", Weight: 0.16, BanTime: time.Hour, Enabled: true, LogPath: "/var/log/nginx/access.log", Filter: FilterNginxBots, MaxRetry: 2},
		{Name: "nginx-http-auth", Weight: 0.10, BanTime: time.Hour, Enabled: true, LogPath: "/var/log/nginx/error.log", Filter: FilterNginxAuth, MaxRetry: 3},
		{Name: "postfix-sasl", Weight: 0.12, BanTime: time.Hour, Increment: true, MaxTime: 7 * 24 * time.Hour, Enabled: true, LogPath: "/var/log/mail.log", Filter: FilterPostfix, MaxRetry: 3},
		{Name: "dovecot", Weight: 0.12, BanTime: 24 * time.Hour, Enabled: true, LogPath: "/var/log/mail.log", Filter: FilterDovecot, MaxRetry: 5},
		{Name: "recidive", Weight: 0.06, BanTime: -1, Enabled: true, LogPath: "/var/log/fail2ban.log", Filter: FilterRecidive, MaxRetry: 5},
	}
}

// Spec parameterises a generated database. Zero fields take the defaults
// described on each field; Rows and Now are required.
type Spec struct {
	// Rows is the number of rows in bans (10k, 100k, 1M …).
	Rows int
	// Seed makes the database reproducible.
	Seed uint64
	// Now is the end of the history: no ban is later, and "currently banned"
	// in Stats is evaluated at Now. Whole seconds are used.
	Now time.Time
	// Schema is fail2ban's schema version: 4 (default) or 2.
	Schema int
	// History is how far back bans reach (default 30 days).
	History time.Duration
	// IPsPerRow is distinct IPs per bans row (default 0.235).
	IPsPerRow float64
	// PairsPerRow is (ip, jail) pairs — bips rows — per bans row (default 0.49).
	PairsPerRow float64
	// IPv6Share is the fraction of distinct IPs that are IPv6 (default 0.05).
	IPv6Share float64
	// DuplicateShare is the fraction of bans rows that are exact duplicates of
	// the row before them (default 0.002).
	DuplicateShare float64
	// ManualShare is the fraction of ban events made by `fail2ban-client set
	// JAIL banip` (data {"matches": [], "failures": 0}; default 0.01).
	ManualShare float64
	// MatchesPerBan caps the log lines stored in data (default 1; fail2ban
	// keeps up to maxmatches, so real files are larger).
	MatchesPerBan int
	// Jails defaults to DefaultJails().
	Jails []Jail
	// IndexesFirst creates the indexes before loading rows, exactly in
	// fail2ban's order (sqlite_master then equals a fail2ban-created file row
	// for row); slower. By default the large indexes are built after loading,
	// with the same SQL text.
	IndexesFirst bool
}

const (
	defaultHistory        = 30 * 24 * time.Hour
	defaultIPsPerRow      = 0.235
	defaultPairsPerRow    = 0.49
	defaultIPv6Share      = 0.05
	defaultDuplicateShare = 0.002
	defaultManualShare    = 0.01
)

// DefaultSpec is the realistic history the benchmarks use: rows bans rows over
// 30 days ending at now, seed 1.
func DefaultSpec(rows int, now time.Time) Spec {
	return Spec{Rows: rows, Seed: 1, Now: now}
}

// withDefaults returns the spec with every zero field set to its default,
// or an error when the spec cannot be generated.
func (s Spec) withDefaults() (Spec, error) {
	if s.Rows <= 0 {
		return s, fmt.Errorf("f2bgen: Spec.Rows must be positive, got %d", s.Rows)
	}
	if s.Now.IsZero() {
		return s, errors.New("f2bgen: Spec.Now is required (the end of the generated history)")
	}
	s.Now = s.Now.Truncate(time.Second).UTC()
	if s.Schema == 0 {
		s.Schema = 4
	}
	if s.Schema != 4 && s.Schema != 2 {
		return s, fmt.Errorf("f2bgen: Spec.Schema must be 4 or 2, got %d", s.Schema)
	}
	if s.History == 0 {
		s.History = defaultHistory
	}
	if s.History < time.Hour {
		return s, fmt.Errorf("f2bgen: Spec.History must be at least 1h, got %s", s.History)
	}
	defaultFloat := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	defaultFloat(&s.IPsPerRow, defaultIPsPerRow)
	defaultFloat(&s.PairsPerRow, defaultPairsPerRow)
	defaultFloat(&s.IPv6Share, defaultIPv6Share)
	defaultFloat(&s.DuplicateShare, defaultDuplicateShare)
	defaultFloat(&s.ManualShare, defaultManualShare)
	if s.MatchesPerBan == 0 {
		s.MatchesPerBan = 1
	}
	if len(s.Jails) == 0 {
		s.Jails = DefaultJails()
	}
	for _, share := range []struct {
		name string
		v    float64
	}{{"IPsPerRow", s.IPsPerRow}, {"PairsPerRow", s.PairsPerRow}, {"IPv6Share", s.IPv6Share}, {"DuplicateShare", s.DuplicateShare}, {"ManualShare", s.ManualShare}} {
		if share.v < 0 || share.v > 1 || math.IsNaN(share.v) {
			return s, fmt.Errorf("f2bgen: Spec.%s must lie in [0, 1], got %v", share.name, share.v)
		}
	}
	if len(s.Jails) > 63 {
		return s, fmt.Errorf("f2bgen: at most 63 jails, got %d", len(s.Jails))
	}
	seen := map[string]bool{}
	jails := make([]Jail, len(s.Jails))
	for i, j := range s.Jails {
		if j.Name == "" || seen[j.Name] {
			return s, fmt.Errorf("f2bgen: jail %d: empty or repeated name %q", i, j.Name)
		}
		seen[j.Name] = true
		if j.Weight <= 0 {
			return s, fmt.Errorf("f2bgen: jail %q: Weight must be positive", j.Name)
		}
		if j.BanTime == 0 {
			j.BanTime = 10 * time.Minute
		}
		if j.BanTime < 0 {
			j.BanTime = -1
		}
		if j.MaxRetry <= 0 {
			j.MaxRetry = defaultMaxRetry
		}
		if j.Filter == "" {
			j.Filter = FilterSSHD
		}
		if j.LogPath == "" {
			j.LogPath = "/var/log/" + j.Name + ".log"
		}
		jails[i] = j
	}
	if s.PairsPerRow < s.IPsPerRow {
		return s, fmt.Errorf("f2bgen: Spec.PairsPerRow (%v) must be at least IPsPerRow (%v): every IP is banned in some jail", s.PairsPerRow, s.IPsPerRow)
	}
	if s.PairsPerRow > float64(len(s.Jails))*s.IPsPerRow {
		return s, fmt.Errorf("f2bgen: Spec.PairsPerRow (%v) exceeds jails × IPsPerRow", s.PairsPerRow)
	}
	s.Jails = jails
	return s, nil
}
