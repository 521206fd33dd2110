package geo

import (
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "bangui_exporter_geo_"

// metrics are the resolver's own metrics; Collector exposes them together
// with gauges computed from the memory tier at scrape time and the metrics
// of every provider that is a prometheus.Collector.
type metrics struct {
	r              *Resolver
	lookups        *prometheus.CounterVec
	flushes        prometheus.Counter
	flushErrors    prometheus.Counter
	flushedEntries prometheus.Counter
	lastFlush      prometheus.Gauge
	queueDropped   prometheus.Counter

	cacheEntries *prometheus.Desc
	pending      *prometheus.Desc
}

func newMetrics(r *Resolver) *metrics {
	m := &metrics{
		r: r,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: namespace + "lookups_total",
			Help: "IP lookups by provider (local = non-global address classified without a provider) and result (found, not_found, no_country, error).",
		}, []string{"provider", "result"}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "flushes_total",
			Help: "Flushes of the geo cache that committed dirty entries to the app database (one transaction each).",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "flush_errors_total",
			Help: "Flushes of the geo cache that failed; their entries stay dirty and are written by the next flush.",
		}),
		flushedEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "flushed_entries_total",
			Help: "Geo cache entries written to the app database.",
		}),
		lastFlush: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: namespace + "last_flush_timestamp_seconds",
			Help: "Time of the last successful flush of the geo cache (a flush with nothing dirty counts).",
		}),
		queueDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "queue_full_total",
			Help: "IPs that did not fit in a full resolver queue; they wait in the backlog and are queued when there is room.",
		}),
		cacheEntries: prometheus.NewDesc(namespace+"cache_entries",
			"IPs in the geo memory cache, by state: resolved (country known) or unresolved.", []string{"state"}, nil),
		pending: prometheus.NewDesc(namespace+"pending_ips",
			"IPs queued for background resolution.", nil, nil),
	}
	for _, st := range r.stages {
		for _, res := range resultLabels {
			m.lookups.WithLabelValues(st.provider.Name(), res)
		}
	}
	m.lookups.WithLabelValues(providerLocal, AnswerNoCountry.resultLabel())
	return m
}

// Collector returns the prometheus.Collector of geo's metrics.
func (r *Resolver) Collector() prometheus.Collector { return r.metrics }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.lookups.Describe(ch)
	m.flushes.Describe(ch)
	m.flushErrors.Describe(ch)
	m.flushedEntries.Describe(ch)
	m.lastFlush.Describe(ch)
	m.queueDropped.Describe(ch)
	ch <- m.cacheEntries
	ch <- m.pending
	for _, st := range m.r.stages {
		if c, ok := st.provider.(prometheus.Collector); ok {
			c.Describe(ch)
		}
	}
}

// Collect implements prometheus.Collector. It reads counters kept in memory
// and never touches the database or the network.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.lookups.Collect(ch)
	m.flushes.Collect(ch)
	m.flushErrors.Collect(ch)
	m.flushedEntries.Collect(ch)
	m.queueDropped.Collect(ch)
	r := m.r
	r.mu.Lock()
	resolved, unresolved, pending := r.nResolved, r.entries.len()-r.nResolved, r.nPending
	flushed := !r.flushState.last.IsZero()
	r.mu.Unlock()
	if flushed {
		m.lastFlush.Collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(m.cacheEntries, prometheus.GaugeValue, float64(resolved), "resolved")
	ch <- prometheus.MustNewConstMetric(m.cacheEntries, prometheus.GaugeValue, float64(unresolved), "unresolved")
	ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(pending))
	// Each provider exports its own metrics (IPAPI, MMDB).
	for _, st := range r.stages {
		if c, ok := st.provider.(prometheus.Collector); ok {
			c.Collect(ch)
		}
	}
}
