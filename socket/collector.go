package socket

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Metric descriptions; names and labels are a contract (dashboards/contract.go).
var (
	descServerUp = prometheus.NewDesc("fail2ban_server_up",
		"1 when fail2ban's socket answered this scrape, 0 otherwise.", nil, nil)
	descVersion = prometheus.NewDesc("fail2ban_version_info",
		"fail2ban's version, from its socket; the value is always 1.", []string{"version"}, nil)
	descBannedCurrent = prometheus.NewDesc("fail2ban_jail_banned_current",
		"IPs fail2ban itself has banned in the jail right now (\"Currently banned\").", []string{"jail"}, nil)
	descBannedTotal = prometheus.NewDesc("fail2ban_jail_banned_total",
		"Bans in the jail since fail2ban started (\"Total banned\"); resets when fail2ban restarts.", []string{"jail"}, nil)
	descFailedCurrent = prometheus.NewDesc("fail2ban_jail_failed_current",
		"Failures fail2ban currently counts in the jail, within findtime (\"Currently failed\").", []string{"jail"}, nil)
	descFailedTotal = prometheus.NewDesc("fail2ban_jail_failed_total",
		"Failures fail2ban matched in the jail since it started (\"Total failed\"); resets when fail2ban restarts.", []string{"jail"}, nil)
	descBantime = prometheus.NewDesc("fail2ban_jail_bantime_seconds",
		"The jail's bantime; -1 means permanent. With bantime.increment this is the base ban time.", []string{"jail"}, nil)
	descFindtime = prometheus.NewDesc("fail2ban_jail_findtime_seconds",
		"The jail's findtime: the window in which maxretry failures lead to a ban.", []string{"jail"}, nil)
	descMaxretry = prometheus.NewDesc("fail2ban_jail_maxretry",
		"The jail's maxretry: failures within findtime that lead to a ban.", []string{"jail"}, nil)
	descPurgeAge = prometheus.NewDesc("fail2ban_db_purge_age_seconds",
		"fail2ban's dbpurgeage: ban history older than this is deleted from its database.", nil, nil)
)

// Collector defaults.
const (
	DefaultMaxJails    = 200
	DefaultSettingsTTL = time.Minute
	// scrapeTimeoutMargin is left of Prometheus' scrape timeout for the
	// rest of the scrape.
	scrapeTimeoutMargin = 500 * time.Millisecond
	minBudget           = 100 * time.Millisecond
)

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	// Logger receives one line per change of fail2ban's reachability.
	Logger *slog.Logger
	// Budget bounds all socket work of one scrape (the client's timeout
	// when zero). A scrape timeout seen by ObserveScrapeTimeout lowers it.
	Budget time.Duration
	// MaxJails bounds the jails exported (and so the commands per scrape);
	// DefaultMaxJails when zero.
	MaxJails int
	// SettingsTTL is how long jail settings, version and dbpurgeage are
	// cached (DefaultSettingsTTL when zero). They are also re-read after a
	// reconnect and for jails seen for the first time.
	SettingsTTL time.Duration
}

// Collector exports what fail2ban's socket reports. Each scrape sends at
// most 1 + MaxJails commands ("status" and "status JAIL short" per jail),
// plus, when the cache is stale, "version", "get dbpurgeage" and three
// "get JAIL ..." per jail. Concurrent scrapes share one round of commands.
type Collector struct {
	client      *Client
	logger      *slog.Logger
	budget      time.Duration
	maxJails    int
	settingsTTL time.Duration

	// scrapeTimeout is the last X-Prometheus-Scrape-Timeout-Seconds seen,
	// in nanoseconds (0: none).
	scrapeTimeout atomic.Int64

	// rounds shares one round of commands between concurrent scrapes.
	rounds singleflight.Group

	mu     sync.Mutex
	cache  settingsCache
	lastUp *bool
	warned bool
}

type settingsCache struct {
	dials    uint64
	fetched  time.Time
	version  string
	purgeAge float64
	hasPurge bool
	jails    map[string]jailSettings
}

type jailSettings struct {
	bantime, findtime, maxretry float64
}

type jailSnapshot struct {
	name     string
	status   JailStatus
	settings jailSettings
}

type snapshot struct {
	up       bool
	err      error
	version  string
	purgeAge float64
	hasPurge bool
	jails    []jailSnapshot
}

// NewCollector returns a collector that asks fail2ban through client.
func NewCollector(client *Client, opts CollectorOptions) *Collector {
	c := &Collector{client: client, logger: opts.Logger, budget: opts.Budget, maxJails: opts.MaxJails, settingsTTL: opts.SettingsTTL}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.budget <= 0 {
		c.budget = client.Timeout()
	}
	if c.maxJails <= 0 {
		c.maxJails = DefaultMaxJails
	}
	if c.settingsTTL <= 0 {
		c.settingsTTL = DefaultSettingsTTL
	}
	return c
}

// ObserveScrapeTimeout wraps the metrics handler: it records Prometheus'
// X-Prometheus-Scrape-Timeout-Seconds so the socket work of a scrape ends
// in time for the scrape to complete.
func (c *Collector) ObserveScrapeTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
			if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
				c.scrapeTimeout.Store(int64(secs * float64(time.Second)))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// scrapeBudget is the time the socket part of one scrape may take.
func (c *Collector) scrapeBudget() time.Duration {
	budget := c.budget
	if st := time.Duration(c.scrapeTimeout.Load()); st > 0 {
		if limit := st - scrapeTimeoutMargin; limit < budget {
			budget = limit
		}
	}
	return max(budget, minBudget)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServerUp, descVersion, descBannedCurrent, descBannedTotal,
		descFailedCurrent, descFailedTotal, descBantime, descFindtime, descMaxretry, descPurgeAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.shared()
	if !snap.up {
		ch <- prometheus.MustNewConstMetric(descServerUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descServerUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descVersion, prometheus.GaugeValue, 1, snap.version)
	if snap.hasPurge {
		ch <- prometheus.MustNewConstMetric(descPurgeAge, prometheus.GaugeValue, snap.purgeAge)
	}
	for _, j := range snap.jails {
		ch <- prometheus.MustNewConstMetric(descBannedCurrent, prometheus.GaugeValue, j.status.CurrentlyBanned, j.name)
		ch <- prometheus.MustNewConstMetric(descBannedTotal, prometheus.CounterValue, j.status.TotalBanned, j.name)
		ch <- prometheus.MustNewConstMetric(descFailedCurrent, prometheus.GaugeValue, j.status.CurrentlyFailed, j.name)
		ch <- prometheus.MustNewConstMetric(descFailedTotal, prometheus.CounterValue, j.status.TotalFailed, j.name)
		ch <- prometheus.MustNewConstMetric(descBantime, prometheus.GaugeValue, j.settings.bantime, j.name)
		ch <- prometheus.MustNewConstMetric(descFindtime, prometheus.GaugeValue, j.settings.findtime, j.name)
		ch <- prometheus.MustNewConstMetric(descMaxretry, prometheus.GaugeValue, j.settings.maxretry, j.name)
	}
}

// shared runs one round of commands, or waits for the round another
// concurrent scrape has started and uses its result.
func (c *Collector) shared() snapshot {
	v, _, _ := c.rounds.Do("round", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), c.scrapeBudget())
		defer cancel()
		snap := c.fetch(ctx)
		c.mu.Lock()
		c.logStateLocked(snap)
		c.mu.Unlock()
		return snap, nil
	})
	return v.(snapshot)
}

// logStateLocked logs once per change between reachable and unreachable.
func (c *Collector) logStateLocked(snap snapshot) {
	if c.lastUp != nil && *c.lastUp == snap.up {
		return
	}
	up := snap.up
	first := c.lastUp == nil
	c.lastUp = &up
	switch {
	case up:
		c.logger.Info("fail2ban socket answers", "path", c.client.Path(), "version", snap.version, "jails", len(snap.jails))
	case first:
		c.logger.Warn("fail2ban socket does not answer; fail2ban_server_up is 0 until it does", "path", c.client.Path(), "err", snap.err, "hint", hint(snap.err))
	default:
		c.logger.Warn("fail2ban socket stopped answering; fail2ban_server_up is 0 until it answers again", "path", c.client.Path(), "err", snap.err, "hint", hint(snap.err))
	}
}

func hint(err error) string {
	switch {
	case errors.Is(err, errPermission):
		return "the exporter's user may not open the socket (root-only 0700 directory by default): run as root or grant access"
	case errors.Is(err, ErrProtocol):
		return "the socket path does not lead to fail2ban"
	case errors.Is(err, fs.ErrNotExist):
		return "no socket at this path: fail2ban is stopped (it removes its socket) or --fail2ban.socket is not its path; set --fail2ban.socket='' to read only the database"
	default:
		return "is fail2ban running, and is --fail2ban.socket its socket?"
	}
}

// fetch runs the commands of one scrape. The settings cache is only touched
// here, and fetch runs for one scrape at a time.
func (c *Collector) fetch(ctx context.Context) snapshot {
	jails, err := c.client.Jails(ctx)
	if err != nil {
		return snapshot{err: classify(err)}
	}
	if len(jails) > c.maxJails {
		c.mu.Lock()
		if !c.warned {
			c.warned = true
			c.logger.Warn("fail2ban runs more jails than exported; raise the limit to see all", "jails", len(jails), "exported", c.maxJails)
		}
		c.mu.Unlock()
		jails = jails[:c.maxJails]
	}

	cache := &c.cache
	stale := cache.jails == nil || cache.dials != c.client.Dials() || time.Since(cache.fetched) > c.settingsTTL
	if stale {
		version, err := c.client.Version(ctx)
		if err != nil {
			return snapshot{err: classify(err)}
		}
		purge, hasPurge, err := c.client.DBPurgeAge(ctx)
		if err != nil {
			return snapshot{err: classify(err)}
		}
		*cache = settingsCache{dials: c.client.Dials(), fetched: time.Now(), version: version, purgeAge: purge, hasPurge: hasPurge, jails: map[string]jailSettings{}}
	}
	snap := snapshot{up: true, version: cache.version, purgeAge: cache.purgeAge, hasPurge: cache.hasPurge}
	current := make(map[string]bool, len(jails))
	for _, jail := range jails {
		current[jail] = true
		st, err := c.client.JailStatus(ctx, jail)
		if isUnknownJail(err) {
			continue // removed by a reload since "status"
		}
		if err != nil {
			return snapshot{err: classify(err)}
		}
		settings, ok := cache.jails[jail]
		if !ok {
			settings, err = c.jailSettings(ctx, jail)
			if isUnknownJail(err) {
				continue
			}
			if err != nil {
				return snapshot{err: classify(err)}
			}
			cache.jails[jail] = settings
		}
		snap.jails = append(snap.jails, jailSnapshot{name: jail, status: st, settings: settings})
	}
	for name := range cache.jails {
		if !current[name] {
			delete(cache.jails, name)
		}
	}
	return snap
}

func (c *Collector) jailSettings(ctx context.Context, jail string) (jailSettings, error) {
	var s jailSettings
	for _, f := range []struct {
		name   string
		target *float64
	}{{"bantime", &s.bantime}, {"findtime", &s.findtime}, {"maxretry", &s.maxretry}} {
		v, err := c.client.JailSetting(ctx, jail, f.name)
		if err != nil {
			return jailSettings{}, err
		}
		*f.target = v
	}
	return s, nil
}

func isUnknownJail(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && (se.Type == "fail2ban.exceptions.UnknownJailException" || se.Type == "KeyError")
}

var errPermission = errors.New("permission denied")

// classify marks permission errors so the log can say what to do.
func classify(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return errors.Join(errPermission, err)
	}
	return err
}
