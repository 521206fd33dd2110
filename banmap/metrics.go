package banmap

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HELP texts; dashboards/contract.go holds the same ones.
const (
	asnHelp      = "IPs banned right now per jail and autonomous system: the --geo.asn.top systems with the most, asn=\"unknown\" for IPs no source knows an AS for, and asn=\"other\" for the rest, so a jail's series sum to its fail2ban_banned_ips. Recomputed in the background."
	locationHelp = "IPs banned right now (per jail, summed) at the --geo.city.top places with the most, from a GeoLite2-City layout --geo.mmdb, coordinates rounded to 0.1 degree; city=\"other\" counts the rest and IPs without coordinates. Recomputed in the background."
)

var (
	asnDesc = prometheus.NewDesc("fail2ban_banned_ips_by_asn", asnHelp,
		[]string{"jail", "asn", "as_org"}, nil)
	locationDesc = prometheus.NewDesc("fail2ban_banned_ips_by_location", locationHelp,
		[]string{"country", "city", "latitude", "longitude"}, nil)
)

// snapshot is what one walk produced; it never changes once published.
type snapshot struct {
	at        time.Time
	took      time.Duration
	pairs     int
	withAS    int
	withPlace int
	asOn      bool
	placesOn  bool
	metrics   []prometheus.Metric
	list      *banList
}

// Describe implements prometheus.Collector.
func (m *Maps) Describe(ch chan<- *prometheus.Desc) {
	ch <- asnDesc
	ch <- locationDesc
}

// Collect implements prometheus.Collector: the latest snapshot's series,
// computed by Update (never on the scrape).
func (m *Maps) Collect(ch chan<- prometheus.Metric) {
	for _, metric := range m.snap.Load().metrics {
		ch <- metric
	}
}
