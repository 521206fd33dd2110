package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/common/model"
)

// The naive per-IP geo baseline is what exporters that label bans with a
// country per IP do on every scrape: read the bans from fail2ban's database,
// look every IP up in a MaxMind database, aggregate and render. It runs in
// its own process (benchproc naivegeo …), so its time and its peak RSS are
// its own and not the harness's.
//
// It computes exactly what bangui_exporter exposes for fail2ban_banned_ips
// and fail2ban_recent_bans (same currently-banned rule, same event
// counting, same country rule), so the two can be compared series by
// series. It is generous to the baseline: the database and the mmdb are
// opened once per process, and an IP is looked up once per scrape however
// many rows name it.

// naiveGeoSubcommand is the first argument that runs the baseline.
const naiveGeoSubcommand = "naivegeo"

// geoIP2Country mirrors the Country record of the geoip2 Go package
// (github.com/oschwald/geoip2-golang), which per-IP exporters decode for
// every lookup: every field, names in every language.
type geoIP2Country struct {
	Continent struct {
		Names     map[string]string `maxminddb:"names"`
		Code      string            `maxminddb:"code"`
		GeoNameID uint              `maxminddb:"geoname_id"`
	} `maxminddb:"continent"`
	Country           geoIP2CountryRecord `maxminddb:"country"`
	RegisteredCountry geoIP2CountryRecord `maxminddb:"registered_country"`
	// RepresentedCountry also has a type in geoip2.
	RepresentedCountry struct {
		geoIP2CountryRecord
		Type string `maxminddb:"type"`
	} `maxminddb:"represented_country"`
	Traits struct {
		IsAnonymousProxy    bool `maxminddb:"is_anonymous_proxy"`
		IsAnycast           bool `maxminddb:"is_anycast"`
		IsSatelliteProvider bool `maxminddb:"is_satellite_provider"`
	} `maxminddb:"traits"`
}

type geoIP2CountryRecord struct {
	Names             map[string]string `maxminddb:"names"`
	IsoCode           string            `maxminddb:"iso_code"`
	GeoNameID         uint              `maxminddb:"geoname_id"`
	IsInEuropeanUnion bool              `maxminddb:"is_in_european_union"`
}

// naiveGeoScrape is the result of one scrape of the baseline.
type naiveGeoScrape struct {
	// Banned is fail2ban_banned_ips by "jail|country".
	Banned map[string]int64
	// Recent is fail2ban_recent_bans by "jail|country|window".
	Recent map[string]int64
	// Rows is the number of result rows read from the database.
	Rows int
	// Lookups is the number of mmdb lookups (distinct IPs).
	Lookups int
	// Unresolved counts looked-up IPs without a country (ZZ).
	Unresolved int
	// Exposition is the rendered text exposition.
	Exposition []byte
}

// naiveGeo is the baseline's state: what a per-IP exporter keeps open.
type naiveGeo struct {
	db          *sql.DB
	mmdb        *maxminddb.Reader
	windows     []time.Duration
	windowNames []string
}

func openNaiveGeo(dbPath, mmdbPath string, windows []time.Duration, windowNames []string) (*naiveGeo, error) {
	u := url.URL{Scheme: "file", Path: dbPath, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("naive geo: open %s: %w", dbPath, err)
	}
	db.SetMaxOpenConns(1)
	r, err := maxminddb.Open(mmdbPath)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("naive geo: open %s: %w", mmdbPath, err)
	}
	return &naiveGeo{db: db, mmdb: r, windows: windows, windowNames: windowNames}, nil
}

func (g *naiveGeo) Close() error {
	return errors.Join(g.mmdb.Close(), g.db.Close())
}

// country looks ip up as bangui_exporter's mmdb provider decides a country
// (country.iso_code, else registered_country.iso_code), decoding the whole
// record as geoip2 does; "" when the database has none.
func (g *naiveGeo) country(ip netip.Addr) (string, error) {
	var rec geoIP2Country
	if err := g.mmdb.Lookup(ip.Unmap()).Decode(&rec); err != nil {
		return "", fmt.Errorf("naive geo: lookup %s: %w", ip, err)
	}
	if rec.Country.IsoCode != "" {
		return rec.Country.IsoCode, nil
	}
	return rec.RegisteredCountry.IsoCode, nil
}

// scrape computes the metrics at time now.
func (g *naiveGeo) scrape(ctx context.Context, now time.Time) (naiveGeoScrape, error) {
	s := naiveGeoScrape{Banned: map[string]int64{}, Recent: map[string]int64{}}
	countries := map[string]string{} // per scrape: IP text → country
	countryOf := func(ipText string) (string, error) {
		if c, ok := countries[ipText]; ok {
			return c, nil
		}
		c := ""
		if ip, err := netip.ParseAddr(ipText); err == nil {
			if c, err = g.country(ip); err != nil {
				return "", err
			}
		}
		s.Lookups++
		if c == "" {
			s.Unresolved++
			c = "ZZ"
		}
		countries[ipText] = c
		return c, nil
	}
	query := func(q string, arg int64, row func(jail, ip string, n int64) error) error {
		rows, err := g.db.QueryContext(ctx, q, arg)
		if err != nil {
			return fmt.Errorf("naive geo: %w", err)
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var jail, ip string
			var n int64
			if err := rows.Scan(&jail, &ip, &n); err != nil {
				return fmt.Errorf("naive geo: %w", err)
			}
			s.Rows++
			if err := row(jail, ip, n); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("naive geo: %w", err)
		}
		return nil
	}
	// fail2ban's currently-banned rule, one row per (jail, ip).
	err := query(`SELECT jail, ip, 1 FROM bips WHERE bantime <= -1 OR timeofban + bantime > ?`, now.Unix(),
		func(jail, ip string, _ int64) error {
			c, err := countryOf(ip)
			s.Banned[jail+"|"+c]++
			return err
		})
	if err != nil {
		return s, err
	}
	// Ban events of the longest window in one pass; exact duplicate rows
	// (same jail, ip, timeofban) are one event (SQLite drops them).
	cutoffs := make([]int64, len(g.windows))
	oldest := now.Unix()
	for i, w := range g.windows {
		cutoffs[i] = now.Unix() - int64(w/time.Second)
		oldest = min(oldest, cutoffs[i])
	}
	err = query(`SELECT DISTINCT jail, ip, timeofban FROM bans WHERE timeofban >= ?`, oldest,
		func(jail, ip string, tob int64) error {
			c, err := countryOf(ip)
			if err != nil {
				return err
			}
			for i, cut := range cutoffs {
				if tob >= cut {
					s.Recent[jail+"|"+c+"|"+g.windowNames[i]]++
				}
			}
			return nil
		})
	if err != nil {
		return s, err
	}
	s.Exposition = renderNaiveGeo(s.Banned, s.Recent)
	return s, nil
}

// renderNaiveGeo writes the text exposition of the baseline's metrics.
func renderNaiveGeo(banned, recent map[string]int64) []byte {
	var b bytes.Buffer
	b.WriteString("# HELP fail2ban_banned_ips Banned IPs now.\n# TYPE fail2ban_banned_ips gauge\n")
	for _, k := range slices.Sorted(maps.Keys(banned)) {
		f := strings.Split(k, "|")
		fmt.Fprintf(&b, "fail2ban_banned_ips{country=%q,jail=%q} %d\n", f[1], f[0], banned[k])
	}
	b.WriteString("# HELP fail2ban_recent_bans Ban events in the window.\n# TYPE fail2ban_recent_bans gauge\n")
	for _, k := range slices.Sorted(maps.Keys(recent)) {
		f := strings.Split(k, "|")
		fmt.Fprintf(&b, "fail2ban_recent_bans{country=%q,jail=%q,window=%q} %d\n", f[1], f[0], f[2], recent[k])
	}
	return b.Bytes()
}

// naiveGeoRun is what one run of the baseline process reports.
type naiveGeoRun struct {
	// Durations of the timed scrapes, in order.
	Durations []time.Duration
	// Last is the last scrape's result (exposition left out).
	Banned     map[string]int64
	Recent     map[string]int64
	Rows       int
	Lookups    int
	Unresolved int
	Series     int
	Bytes      int
	// PeakRSSBytes is the process's VmHWM after all scrapes.
	PeakRSSBytes int64
}

// runNaiveGeoCommand is the naivegeo subcommand: it runs the baseline's
// scrapes and writes a naiveGeoRun as JSON to out.
func runNaiveGeoCommand(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(naiveGeoSubcommand, flag.ContinueOnError)
	dbPath := fs.String("db", "", "fail2ban database")
	mmdbPath := fs.String("mmdb", "", "MaxMind-format country database")
	nowUnix := fs.Int64("now", 0, "unix time of the scrapes (default: the time of each scrape)")
	scrapes := fs.Int("scrapes", 1, "timed scrapes")
	windows := fs.String("windows", "24h,7d,30d,365d", "windows")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbPath == "" || *mmdbPath == "" || *scrapes < 1 {
		return errors.New("naivegeo: -db, -mmdb and a positive -scrapes are required")
	}
	var ws []time.Duration
	var names []string
	for w := range strings.SplitSeq(*windows, ",") {
		d, err := model.ParseDuration(strings.TrimSpace(w))
		if err != nil {
			return fmt.Errorf("naivegeo: -windows: %w", err)
		}
		ws, names = append(ws, time.Duration(d)), append(names, strings.TrimSpace(w))
	}
	g, err := openNaiveGeo(*dbPath, *mmdbPath, ws, names)
	if err != nil {
		return err
	}
	defer func() { _ = g.Close() }()
	var run naiveGeoRun
	for range *scrapes {
		now := time.Now()
		if *nowUnix != 0 {
			now = time.Unix(*nowUnix, 0)
		}
		start := time.Now()
		s, err := g.scrape(ctx, now)
		if err != nil {
			return err
		}
		// The exposition is what the exporter's HTTP handler would write.
		_, _ = io.Discard.Write(s.Exposition)
		run.Durations = append(run.Durations, time.Since(start))
		run.Banned, run.Recent, run.Rows, run.Lookups, run.Unresolved = s.Banned, s.Recent, s.Rows, s.Lookups, s.Unresolved
		run.Series, run.Bytes = len(s.Banned)+len(s.Recent), len(s.Exposition)
	}
	f, err := os.Open("/proc/self/status")
	if err == nil {
		run.PeakRSSBytes, _ = vmHWM(f)
		_ = f.Close()
	}
	return json.NewEncoder(out).Encode(run)
}

// runNaiveGeo runs the baseline in a child process (this executable with
// the naivegeo subcommand). now, when not zero, fixes the time of every
// scrape (for the correctness checks).
func runNaiveGeo(ctx context.Context, dbPath, mmdbPath string, now time.Time, windows []string, scrapes int) (naiveGeoRun, error) {
	self, err := os.Executable()
	if err != nil {
		return naiveGeoRun{}, fmt.Errorf("naive geo: %w", err)
	}
	args := []string{naiveGeoSubcommand, "-db", dbPath, "-mmdb", mmdbPath, "-scrapes", strconv.Itoa(scrapes), "-windows", strings.Join(windows, ",")}
	if !now.IsZero() {
		args = append(args, "-now", strconv.FormatInt(now.Unix(), 10))
	}
	cmd := exec.CommandContext(ctx, self, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return naiveGeoRun{}, fmt.Errorf("naive geo baseline: %w: %s", err, stderr.String())
	}
	var run naiveGeoRun
	if err := json.Unmarshal(stdout.Bytes(), &run); err != nil {
		return run, fmt.Errorf("naive geo baseline output: %w", err)
	}
	return run, nil
}

// sums returns the baseline's totals: currently banned and ban events per
// window (in the order of windows).
func (r naiveGeoRun) sums(windows []string) (banned int64, perWindow []int64) {
	for _, v := range r.Banned {
		banned += v
	}
	perWindow = make([]int64, len(windows))
	for k, v := range r.Recent {
		w := k[strings.LastIndexByte(k, '|')+1:]
		if i := slices.Index(windows, w); i >= 0 {
			perWindow[i] += v
		}
	}
	return banned, perWindow
}

// countries returns the distinct countries (ZZ not counted) among the
// baseline's currently banned and recent series.
func (r naiveGeoRun) countries() int {
	set := map[string]bool{}
	for k := range r.Banned {
		set[strings.Split(k, "|")[1]] = true
	}
	for k := range r.Recent {
		set[strings.Split(k, "|")[1]] = true
	}
	delete(set, "ZZ")
	return len(set)
}
