package collector

// The cached families: fail2ban_banned_ips, fail2ban_bans_total and
// fail2ban_recent_bans hold one series per (jail, country[, window]) —
// thousands with countries on — and change far less often than they are
// scraped. The engine counts the changes of each family's counts
// (engine.changes); a snapshot gives each family a generation that changes
// exactly when those counts did; and the Exporter keeps each family's text
// exposition, encoded once per generation, for the /metrics handler
// (EncodedFamilies), which writes it as is. Time passing is a change only
// when a ban expires or a counted ban event leaves a window.

import (
	"bytes"
	"compress/flate"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// cachedFamily names one cached family; the order is the families' name
// order, as the text exposition sorts them.
type cachedFamily int

const (
	familyBanned cachedFamily = iota // fail2ban_banned_ips
	familyTotal                      // fail2ban_bans_total
	familyRecent                     // fail2ban_recent_bans
	numCachedFamilies
)

// cachedFamilyText is the name, HELP and TYPE of each cached family; their
// prometheus.Descs (collector.go) are made from it.
var cachedFamilyText = [numCachedFamilies]struct{ name, help, typ string }{
	familyBanned: {namespace + "_banned_ips", "IPs banned right now by fail2ban's rule on bips: bantime <= -1 OR timeofban + bantime > now.", "gauge"},
	familyTotal:  {namespace + "_bans_total", "Ban events that appeared in fail2ban's database since the exporter started.", "counter"},
	familyRecent: {namespace + "_recent_bans", "Ban events (distinct rows of bans, united with the exporter's ban archive when it is on) whose timeofban lies in the trailing window.", "gauge"},
}

// DeflateLevel is the compress/flate level of EncodedFamily.Deflate.
const DeflateLevel = flate.BestSpeed

// EncodedFamily is one cached family in the Prometheus text format
// (text/plain; version=0.0.4), byte for byte as expfmt encodes it: HELP,
// TYPE, then one line per series, sorted by label values. It never changes
// once made; a change of the family's counts makes a new one.
type EncodedFamily struct {
	name string
	text []byte

	deflateOnce sync.Once
	deflated    []byte
}

// Name is the family's metric name.
func (f *EncodedFamily) Name() string { return f.name }

// Text is the family's text exposition. The caller must not modify it.
func (f *EncodedFamily) Text() []byte { return f.text }

// Deflate is Text compressed as a raw DEFLATE stream (RFC 1951) at
// DeflateLevel and ended by a sync flush: byte-aligned, without a final
// block, so that it can be followed by further DEFLATE data, and streams
// like it can be concatenated into one. It is compressed at the first call
// and kept. The caller must not modify it.
func (f *EncodedFamily) Deflate() []byte {
	f.deflateOnce.Do(func() {
		var buf bytes.Buffer
		buf.Grow(len(f.text)/6 + 64)
		zw, err := flate.NewWriter(&buf, DeflateLevel)
		if err != nil {
			panic(fmt.Sprintf("flate level %d: %v", DeflateLevel, err)) // a constant, valid level
		}
		// Writes to a bytes.Buffer do not fail.
		_, _ = zw.Write(f.text)
		_ = zw.Flush()
		f.deflated = buf.Bytes()
	})
	return f.deflated
}

// familyCache holds the last EncodedFamily of each cached family with the
// generation it was encoded from.
type familyCache struct {
	mu   sync.Mutex
	gen  [numCachedFamilies]uint64
	fams [numCachedFamilies]*EncodedFamily
}

// EncodedFamilies returns the cached families of the last refresh, in name
// order, as Collect would expose them: fail2ban_bans_total once fail2ban's
// database was read, the gauges only while it is readable (fail2ban_up 1),
// a family without series not at all. A family is encoded again only when
// its counts changed since it was last encoded. It does not refresh: the
// caller collects Uncached first, which does.
func (ex *Exporter) EncodedFamilies() []*EncodedFamily {
	ex.mu.Lock()
	snap, up := ex.snap, ex.up
	ex.mu.Unlock()
	if snap == nil {
		return nil
	}
	c := &ex.encoded
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*EncodedFamily, 0, numCachedFamilies)
	for f := range numCachedFamilies {
		if f != familyTotal && !up {
			continue
		}
		if c.fams[f] == nil || c.gen[f] != snap.gen[f] {
			c.fams[f] = ex.encodeFamily(f, snap)
			c.gen[f] = snap.gen[f]
		}
		if len(c.fams[f].text) > 0 {
			out = append(out, c.fams[f])
		}
	}
	return out
}

// encodeFamily encodes family f of snap: its series sorted by their label
// values in label-name order (country, jail, window), as the registry's
// Gather sorts them, and every line as expfmt writes it. An empty family
// has an empty text.
func (ex *Exporter) encodeFamily(f cachedFamily, snap *snapshot) *EncodedFamily {
	meta := cachedFamilyText[f]
	out := &EncodedFamily{name: meta.name}
	// Sort by ranks: label values compared as strings, as Gather does.
	countryRank := ranks(snap.countries)
	jailRank := ranks(snap.jails)
	type series struct {
		order         uint64 // country rank, jail rank, window rank
		country, jail uint16
		window        int
		value         float64
	}
	var rows []series
	add := func(k seriesKey, window, windowRank int, v float64) {
		rows = append(rows, series{
			order:   uint64(countryRank[k.country])<<40 | uint64(jailRank[k.jail])<<20 | uint64(windowRank),
			country: k.country, jail: k.jail, window: window, value: v,
		})
	}
	switch f {
	case familyBanned:
		rows = make([]series, 0, len(snap.bannedNow))
		for k, v := range snap.bannedNow {
			add(k, 0, 0, float64(v))
		}
	case familyTotal:
		rows = make([]series, 0, len(snap.bansTotal))
		for k, v := range snap.bansTotal {
			add(k, 0, 0, float64(v))
		}
	case familyRecent:
		labels := make([]string, len(ex.opts.Windows))
		for w := range ex.opts.Windows {
			labels[w] = ex.opts.Windows[w].Label
		}
		windowRank := ranks(labels)
		n := 0
		for _, counts := range snap.windows {
			n += len(counts)
		}
		rows = make([]series, 0, n)
		for w, counts := range snap.windows {
			for k, v := range counts {
				add(k, w, windowRank[w], float64(v))
			}
		}
	}
	if len(rows) == 0 {
		return out
	}
	slices.SortFunc(rows, func(a, b series) int {
		switch {
		case a.order < b.order:
			return -1
		case a.order > b.order:
			return 1
		}
		return 0
	})
	countries := escapedValues(snap.countries)
	jails := escapedValues(snap.jails)
	var windows []string
	if f == familyRecent {
		windows = make([]string, len(ex.opts.Windows))
		for w := range ex.opts.Windows {
			windows[w] = labelValueEscaper.Replace(ex.opts.Windows[w].Label)
		}
	}
	b := make([]byte, 0, 64+len(meta.help)+len(rows)*(len(meta.name)+48))
	b = append(b, "# HELP "...)
	b = append(b, meta.name...)
	b = append(b, ' ')
	b = append(b, helpEscaper.Replace(meta.help)...)
	b = append(b, "\n# TYPE "...)
	b = append(b, meta.name...)
	b = append(b, ' ')
	b = append(b, meta.typ...)
	b = append(b, '\n')
	for i := range rows {
		r := &rows[i]
		b = append(b, meta.name...)
		b = append(b, `{country="`...)
		b = append(b, countries[r.country]...)
		b = append(b, `",jail="`...)
		b = append(b, jails[r.jail]...)
		if f == familyRecent {
			b = append(b, `",window="`...)
			b = append(b, windows[r.window]...)
		}
		b = append(b, `"} `...)
		b = strconv.AppendFloat(b, r.value, 'g', -1, 64) // expfmt's writeFloat
		b = append(b, '\n')
	}
	out.text = b
	return out
}

// The escaping of expfmt's text format: in HELP, backslash and newline; in
// label values also the double quote.
var (
	helpEscaper       = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// escapedValues escapes every name as a label value.
func escapedValues(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = labelValueEscaper.Replace(n)
	}
	return out
}

// ranks gives each name its position in byte-wise string order.
func ranks(names []string) []int {
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	r := make([]int, len(names))
	for pos, i := range idx {
		r[i] = pos
	}
	return r
}

// Uncached returns a collector of the Exporter's metrics without the cached
// families: the /metrics handler registers it in place of the Exporter and
// writes EncodedFamilies beside what it gathers. Its Collect refreshes, as
// the Exporter's does.
func (ex *Exporter) Uncached() prometheus.Collector { return uncachedCollector{ex} }

// CachedCollector returns a collector of only the cached families of the
// last refresh, as metrics (it does not refresh): with Uncached, it makes up
// what the Exporter collects, for the encodings the /metrics handler does
// not cache (OpenMetrics, protobuf).
func (ex *Exporter) CachedCollector() prometheus.Collector { return cachedCollector{ex} }

type uncachedCollector struct{ ex *Exporter }

func (c uncachedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, jailEnabledDesc, oldestDesc,
		readDurationDesc, lastSuccessDesc, readErrorsDesc, skippedDesc, rowsDesc, ipsDesc, reconcileDesc, schemaDesc} {
		ch <- d
	}
}

func (c uncachedCollector) Collect(ch chan<- prometheus.Metric) {
	c.ex.refreshForScrape()
	c.ex.collect(ch, false)
}

type cachedCollector struct{ ex *Exporter }

func (c cachedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bannedDesc
	ch <- recentDesc
	ch <- bansTotalDesc
}

func (c cachedCollector) Collect(ch chan<- prometheus.Metric) {
	c.ex.mu.Lock()
	snap, up := c.ex.snap, c.ex.up
	c.ex.mu.Unlock()
	if snap != nil {
		c.ex.collectCached(ch, snap, up)
	}
}
