package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	ogorek "github.com/kisielk/og-rek"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/socket"
)

// socketResult is the socket-exporter comparison: a real sandboxed
// fail2ban-server holding many banned IPs, scraped the way socket exporters
// scrape it (a new connection, "status", then "status JAIL" — with the full
// banned-IP list — for every jail), beside bangui_exporter running on the
// same fail2ban (its database and its socket).
type socketResult struct {
	BannedIPs int
	// Banned per jail, as fail2ban reports it ("Currently banned").
	PerJail map[string]int
	// Setup is how long banning all IPs took (banip in bulk over the socket
	// until fail2ban reported every one banned).
	Setup time.Duration

	Scrapes int
	// Per scrape of the socket baseline: connect, status, status JAIL for
	// every jail (decoded), close.
	BaselineP50, BaselineP95, BaselineP99 time.Duration
	// IPsPerScrape is the number of banned IPs the baseline's replies
	// listed (all jails).
	IPsPerScrape int

	// Ours: bangui_exporter on the same fail2ban.
	Ready             time.Duration
	CountriesResolved time.Duration
	Scrape            scrapeStats
	PeakRSSBytes      int64
	// BannedIPsMetric is the sum of fail2ban_banned_ips the exporter exposed.
	BannedIPsMetric float64
}

// sandboxIPs returns n distinct public addresses as f2bgen draws them (the
// registries' blocks, so they resolve to a realistic mix of countries).
func sandboxIPs(n int, now time.Time) ([]string, error) {
	// f2bgen's default history has ~0.235 distinct IPs per row.
	rows := n*5 + 1000
	bans, err := f2bgen.Bans(f2bgen.DefaultSpec(rows, now), false)
	if err != nil {
		return nil, err
	}
	seen := make(map[netip.Addr]bool, n)
	ips := make([]string, 0, n)
	for _, b := range bans {
		if len(ips) == n {
			break
		}
		a, err := netip.ParseAddr(b.IP)
		if err != nil || seen[a] {
			continue
		}
		seen[a] = true
		ips = append(ips, a.String())
	}
	if len(ips) < n {
		return nil, fmt.Errorf("only %d distinct IPs for %d", len(ips), n)
	}
	return ips, nil
}

// banInBulk bans ips over the socket with "set JAIL banip IP…", chunks of
// ips spread round-robin over jails, and waits until fail2ban reports them
// all banned.
func banInBulk(ctx context.Context, c *socket.Client, jails, ips []string) (map[string]int, error) {
	const chunk = 5000
	want := map[string]int{}
	for i := 0; i < len(ips); i += chunk {
		jail := jails[(i/chunk)%len(jails)]
		part := ips[i:min(i+chunk, len(ips))]
		if _, err := c.Command(ctx, append([]string{"set", jail, "banip"}, part...)...); err != nil {
			return nil, fmt.Errorf("banip %d IPs in %s: %w", len(part), jail, err)
		}
		want[jail] += len(part)
	}
	for {
		got := map[string]int{}
		for _, jail := range jails {
			st, err := c.JailStatus(ctx, jail)
			if err != nil {
				return nil, err
			}
			got[jail] = int(st.CurrentlyBanned)
		}
		done := true
		for jail, n := range want {
			if got[jail] < n {
				done = false
			}
		}
		if done {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for fail2ban to ban %v (has %v): %w", want, got, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// socketExporterScrape is one scrape as socket exporters do it (the most
// used one, in Go, per Collect): a new connection, ping, the jail list, the
// full status of every jail, the server version. (Newer versions also ask
// three settings per jail; left out, which flatters the baseline.) It
// returns the number of banned IPs listed.
func socketExporterScrape(ctx context.Context, path string) (int, error) {
	c := socket.New(socket.Options{Path: path, Timeout: 30 * time.Second})
	defer func() { _ = c.Close() }()
	if err := c.Ping(ctx); err != nil {
		return 0, err
	}
	jails, err := c.Jails(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, jail := range jails {
		v, err := c.Command(ctx, "status", jail)
		if err != nil {
			return 0, err
		}
		list, ok := findPair(v, "Banned IP list")
		if !ok {
			return 0, fmt.Errorf("status %s: no banned IP list", jail)
		}
		switch l := list.(type) {
		case []any:
			n += len(l)
		case ogorek.Tuple:
			n += len(l)
		default:
			return 0, fmt.Errorf("status %s: banned IP list is %T", jail, list)
		}
	}
	if _, err := c.Version(ctx); err != nil {
		return 0, err
	}
	return n, nil
}

// findPair looks for the (name, value) pair named key anywhere in a
// decoded status reply and returns its value.
func findPair(v any, key string) (any, bool) {
	var items []any
	switch x := v.(type) {
	case []any:
		items = x
	case ogorek.Tuple:
		items = x
	default:
		return nil, false
	}
	if len(items) == 2 {
		if name, ok := items[0].(string); ok && name == key {
			return items[1], true
		}
	}
	for _, item := range items {
		if found, ok := findPair(item, key); ok {
			return found, true
		}
	}
	return nil, false
}

// benchSocket runs the socket comparison: cfg.socketBans IPs banned in a
// real sandboxed fail2ban-server.
func benchSocket(ctx context.Context, logger *slog.Logger, cfg config, binary string) (*socketResult, error) {
	dir, err := filepath.Abs(filepath.Join(cfg.dataDir, "socket"))
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	// A unix socket path must be short: keep it in its own temp dir.
	sockDir, err := os.MkdirTemp("", "bench-f2b")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(sockDir) }()
	logger.Info("socket baseline: starting a sandboxed fail2ban-server", "dir", dir)
	sb, err := f2bsandbox.Start(ctx, f2bsandbox.Options{Dir: dir, Socket: filepath.Join(sockDir, "f2b.sock")})
	if err != nil {
		return nil, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = sb.Stop(stopCtx)
	}()
	res := &socketResult{Scrapes: cfg.socketScrapes}
	ips, err := sandboxIPs(cfg.socketBans, time.Now())
	if err != nil {
		return nil, err
	}
	admin := socket.New(socket.Options{Path: sb.Socket(), Timeout: 5 * time.Minute})
	defer func() { _ = admin.Close() }()
	logger.Info("socket baseline: banning", "ips", len(ips))
	start := time.Now()
	// Temporary and permanent bans; the third default jail (incr, 10m)
	// stays empty, as on a host with a jail that has nothing banned.
	if res.PerJail, err = banInBulk(ctx, admin, []string{"sshd", "perm"}, ips); err != nil {
		return nil, err
	}
	res.Setup = time.Since(start)
	for _, n := range res.PerJail {
		res.BannedIPs += n
	}
	_ = admin.Close()

	logger.Info("socket baseline: scrapes", "scrapes", cfg.socketScrapes)
	var lat []time.Duration
	for range cfg.socketScrapes {
		t0 := time.Now()
		n, err := socketExporterScrape(ctx, sb.Socket())
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
		res.IPsPerScrape = n
	}
	res.BaselineP50, res.BaselineP95, res.BaselineP99 = percentile(lat, 50), percentile(lat, 95), percentile(lat, 99)

	// bangui_exporter on the same fail2ban: its database read-only and its
	// socket.
	logger.Info("socket baseline: bangui_exporter on the same fail2ban")
	args := slices.DeleteFunc(slices.Clone(cfg.exporterArgs), func(a string) bool { return strings.HasPrefix(a, "--fail2ban.socket=") })
	args = append(args, "--fail2ban.socket="+sb.Socket())
	p, err := startExporter(binary, sb.DBPath(), filepath.Join(dir, "storage", "bangui.sqlite3"), dir, args, cfg.exporterEnv)
	if err != nil {
		return nil, err
	}
	defer func() { _, _ = p.stop() }()
	if _, err := p.waitReady(ctx, cfg.readyTimeout); err != nil {
		return nil, err
	}
	body, _, err := p.scrape(ctx, false)
	if err != nil {
		return nil, err
	}
	res.Ready = time.Since(p.started)
	if cfg.countries {
		if res.CountriesResolved, err = p.waitCountries(ctx, cfg.readyTimeout); err != nil {
			return nil, err
		}
		if body, _, err = p.scrape(ctx, false); err != nil {
			return nil, err
		}
	}
	sums, err := sumMetrics(strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	if sums.Up != 1 {
		return nil, errors.New("socket comparison: fail2ban_up is not 1")
	}
	res.BannedIPsMetric = sums.BannedIPs
	if res.Scrape, err = timeScrapes(ctx, p, cfg.warmup, cfg.socketScrapes); err != nil {
		return nil, err
	}
	if res.PeakRSSBytes, err = p.peakRSS(); err != nil {
		return nil, err
	}
	if _, err := p.stop(); err != nil {
		return nil, err
	}
	return res, nil
}
