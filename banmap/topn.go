package banmap

// The top-N computation: per-jail counts by autonomous system, counts by
// place, the list for the admin API, and the selection of the N largest
// with a tie-break that keeps the series of the previous snapshot (so equal
// counts do not make series come and go) and then orders by key.

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

// Label values of the series that are not one AS or place.
const (
	// LabelOther is the asn label (and city label) of the series that
	// counts everything outside the top N.
	LabelOther = "other"
	// LabelUnknown is the asn label of banned IPs no source knows an AS for.
	LabelUnknown = "unknown"
)

// asKey is one (jail, AS number) count; number 0 counts IPs without an AS.
type asKey struct {
	jail   string
	number uint32
}

// placeKey is one place: country, city and coordinates in tenths of a
// degree (the rounding the labels show).
type placeKey struct {
	country  string
	city     string
	lat, lon int32
}

// previousTop is the last snapshot's top N, the first tie-break.
type previousTop struct {
	as     map[asKey]bool
	places map[placeKey]bool
}

// builder accumulates one walk.
type builder struct {
	opts      Options
	asOn      bool
	placesOn  bool
	asCounts  map[asKey]int
	asOrgs    map[uint32]string
	places    map[placeKey]int
	unplaced  int
	perJail   map[string]int
	list      listBuilder
	pairs     int
	withAS    int
	withPlace int
}

func newBuilder(opts Options, prevPairs int) *builder {
	b := &builder{
		opts:     opts,
		asOn:     len(opts.AS) > 0,
		placesOn: opts.Places != nil && opts.Places.HasPlaces(),
		asCounts: map[asKey]int{},
		asOrgs:   map[uint32]string{},
		places:   map[placeKey]int{},
		perJail:  map[string]int{},
	}
	if opts.List {
		// Room for as many pairs as last time and a few more: the list
		// is not copied while it grows.
		b.list = newListBuilder(prevPairs + prevPairs/16)
	}
	return b
}

// add takes one chunk of the walk.
func (b *builder) add(chunk []collector.BannedIP) {
	for i := range chunk {
		p := &chunk[i]
		b.pairs++
		b.perJail[p.Jail]++
		ip := netip.AddrFrom16(p.IP).Unmap()
		if b.asOn {
			a, ok := lookupAS(b.opts.AS, ip)
			if ok {
				b.withAS++
				if org, seen := b.asOrgs[a.Number]; !seen || (a.Org != "" && (org == "" || a.Org < org)) {
					// One organisation per number, the same whatever the
					// order of the walk: the smallest non-empty name.
					b.asOrgs[a.Number] = a.Org
				}
			}
			b.asCounts[asKey{jail: p.Jail, number: a.Number}]++
		}
		if b.placesOn {
			if pl, ok := b.opts.Places.Place(ip); ok && pl.HasLocation {
				b.withPlace++
				country := pl.Country
				if country == "" {
					country = p.Country
				}
				b.places[placeKey{country: country, city: pl.City, lat: tenths(pl.Latitude), lon: tenths(pl.Longitude)}]++
			} else {
				b.unplaced++
			}
		}
		if b.opts.List {
			b.list.add(p)
		}
	}
}

// lookupAS asks the sources in order; number 0 when none knows ip.
func lookupAS(sources []ASLookup, ip netip.Addr) (geo.AS, bool) {
	for _, s := range sources {
		if as, found := s.AS(ip); found && as.Number != 0 {
			return as, true
		}
	}
	return geo.AS{}, false
}

// tenths rounds degrees to tenths of a degree.
func tenths(deg float64) int32 { return int32(math.Round(deg * 10)) }

func formatTenths(t int32) string { return strconv.FormatFloat(float64(t)/10, 'f', 1, 64) }

// finish selects the top N lists, builds the metrics and the list, and
// records the new top N in prev.
func (b *builder) finish(prev *previousTop, now time.Time) *snapshot {
	s := &snapshot{at: now, pairs: b.pairs, withAS: b.withAS, withPlace: b.withPlace, asOn: b.asOn, placesOn: b.placesOn}
	if b.asOn {
		s.metrics = append(s.metrics, b.asMetrics(prev)...)
	}
	if b.placesOn {
		s.metrics = append(s.metrics, b.placeMetrics(prev)...)
	}
	if b.opts.List {
		s.list = b.list.finish()
	}
	return s
}

// asMetrics: per jail the N largest AS counts, the unknown count and the
// rest as "other"; the jail's series sum to its banned pairs.
func (b *builder) asMetrics(prev *previousTop) []prometheus.Metric {
	byJail := map[string][]asCount{}
	for k, n := range b.asCounts {
		byJail[k.jail] = append(byJail[k.jail], asCount{key: k, n: n})
	}
	jails := make([]string, 0, len(byJail))
	for j := range byJail {
		jails = append(jails, j)
	}
	slices.Sort(jails)
	next := map[asKey]bool{}
	var out []prometheus.Metric
	for _, jail := range jails {
		counts := byJail[jail]
		unknown := 0
		known := counts[:0]
		for _, c := range counts {
			if c.key.number == 0 {
				unknown += c.n
				continue
			}
			known = append(known, c)
		}
		top, rest := selectTop(known, b.opts.ASNTop, func(c asCount) bool { return prev.as[c.key] }, func(c asCount) int { return c.n },
			func(x, y asCount) int { return cmp.Compare(x.key.number, y.key.number) })
		for _, c := range top {
			next[c.key] = true
			out = append(out, prometheus.MustNewConstMetric(asnDesc, prometheus.GaugeValue, float64(c.n),
				jail, "AS"+strconv.FormatUint(uint64(c.key.number), 10), b.asOrgs[c.key.number]))
		}
		if unknown > 0 {
			out = append(out, prometheus.MustNewConstMetric(asnDesc, prometheus.GaugeValue, float64(unknown), jail, LabelUnknown, ""))
		}
		// "other" is always there (0 when the top N hold every AS), so
		// sum by (jail) never loses a series when an AS drops out.
		out = append(out, prometheus.MustNewConstMetric(asnDesc, prometheus.GaugeValue, float64(rest), jail, LabelOther, ""))
	}
	prev.as = next
	return out
}

type asCount struct {
	key asKey
	n   int
}

type placeCount struct {
	key placeKey
	n   int
}

// placeMetrics: the N places with the most banned pairs, and "other" for
// the rest and for IPs without coordinates.
func (b *builder) placeMetrics(prev *previousTop) []prometheus.Metric {
	counts := make([]placeCount, 0, len(b.places))
	for k, n := range b.places {
		counts = append(counts, placeCount{key: k, n: n})
	}
	top, rest := selectTop(counts, b.opts.CityTop, func(c placeCount) bool { return prev.places[c.key] }, func(c placeCount) int { return c.n },
		func(x, y placeCount) int {
			return cmp.Or(cmp.Compare(x.key.country, y.key.country), cmp.Compare(x.key.city, y.key.city),
				cmp.Compare(x.key.lat, y.key.lat), cmp.Compare(x.key.lon, y.key.lon))
		})
	next := map[placeKey]bool{}
	out := make([]prometheus.Metric, 0, len(top)+1)
	for _, c := range top {
		next[c.key] = true
		out = append(out, prometheus.MustNewConstMetric(locationDesc, prometheus.GaugeValue, float64(c.n),
			c.key.country, c.key.city, formatTenths(c.key.lat), formatTenths(c.key.lon)))
	}
	out = append(out, prometheus.MustNewConstMetric(locationDesc, prometheus.GaugeValue, float64(rest+b.unplaced), "", LabelOther, "", ""))
	prev.places = next
	return out
}

// selectTop returns the n largest items by count, ties broken first by
// membership in the previous top (kept before new ones) and then by key
// order, sorted in that order; and the sum of the counts of the rest.
func selectTop[T any](items []T, n int, wasTop func(T) bool, count func(T) int, byKey func(T, T) int) ([]T, int) {
	slices.SortFunc(items, func(x, y T) int {
		if c := cmp.Compare(count(y), count(x)); c != 0 {
			return c
		}
		if px, py := wasTop(x), wasTop(y); px != py {
			if px {
				return -1
			}
			return 1
		}
		return byKey(x, y)
	})
	if len(items) <= n {
		return items, 0
	}
	rest := 0
	for _, it := range items[n:] {
		rest += count(it)
	}
	return items[:n], rest
}
