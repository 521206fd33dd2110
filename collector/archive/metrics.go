package archive

import (
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "bangui_exporter_archive_"

// Reasons of bangui_exporter_archive_dropped_events_total.
const (
	reasonQueueFull = "queue_full" // Add found the queue at MaxQueue
	reasonInvalid   = "invalid"    // no jail or no valid IP
	reasonExpired   = "expired"    // older than the retention when written
)

// metrics are the archive's own metrics. The gauges are computed at
// collection time from values kept in memory: a scrape never queries the
// database.
type metrics struct {
	s            *Store
	ingested     prometheus.Counter
	cycles       prometheus.Counter
	ingestErrors prometheus.Counter
	pruned       prometheus.Counter
	dropped      *prometheus.CounterVec

	events *prometheus.Desc
	oldest *prometheus.Desc
	queue  *prometheus.Desc
}

func newMetrics(s *Store) *metrics {
	m := &metrics{
		s: s,
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "ingested_events_total",
			Help: "Ban events newly written to the archive (events already archived are ignored and not counted).",
		}),
		cycles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "ingest_cycles_total",
			Help: "Ingest cycles that committed queued events to the archive (one transaction each).",
		}),
		ingestErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "ingest_errors_total",
			Help: "Ingest cycles that failed; their events stay queued and are written by the next cycle.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namespace + "pruned_events_total",
			Help: "Archived ban events deleted because they became older than the retention.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: namespace + "dropped_events_total",
			Help: "Ban events offered to the archive and not written, by reason: queue_full (the queue was at its bound; the engine offers them again), invalid (no jail or IP), expired (older than the retention).",
		}, []string{"reason"}),
		events: prometheus.NewDesc(namespace+"events",
			"Ban events in the archive.", nil, nil),
		oldest: prometheus.NewDesc(namespace+"oldest_event_timestamp_seconds",
			"timeofban of the oldest archived ban event: the archive's horizon (0 while the archive is empty).", nil, nil),
		queue: prometheus.NewDesc(namespace+"queue_events",
			"Ban events queued for the next ingest cycle (including a cycle in progress).", nil, nil),
	}
	for _, r := range []string{reasonQueueFull, reasonInvalid, reasonExpired} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

// Collector returns the prometheus.Collector of the archive's metrics.
func (s *Store) Collector() prometheus.Collector { return s.m }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.ingested.Describe(ch)
	m.cycles.Describe(ch)
	m.ingestErrors.Describe(ch)
	m.pruned.Describe(ch)
	m.dropped.Describe(ch)
	ch <- m.events
	ch <- m.oldest
	ch <- m.queue
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.ingested.Collect(ch)
	m.cycles.Collect(ch)
	m.ingestErrors.Collect(ch)
	m.pruned.Collect(ch)
	m.dropped.Collect(ch)
	ch <- prometheus.MustNewConstMetric(m.events, prometheus.GaugeValue, float64(m.s.Count()))
	var oldest float64
	if t := m.s.Oldest(); !t.IsZero() {
		oldest = float64(t.Unix())
	}
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, oldest)
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(m.s.Queued()))
}
