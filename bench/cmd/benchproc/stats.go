package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// percentile returns the p-th percentile (0 < p ≤ 100) of samples by the
// nearest-rank method: the smallest sample with at least p % of the samples
// at or below it.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// vmHWM reads the peak resident set size (VmHWM) from /proc/PID/status
// content, in bytes.
func vmHWM(status io.Reader) (int64, error) {
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmHWM:") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "VmHWM:"))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmHWM line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM line %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM line")
}

// metricSums is what the harness checks in an exposition: sums over all
// series of the fail2ban metrics.
type metricSums struct {
	Up        float64
	BannedIPs float64
	BansTotal float64
	// BansTotalPresent tells whether fail2ban_bans_total was exposed.
	BansTotalPresent bool
	RecentBans       map[string]float64 // by window label
	SeriesCount      int
	// Counters sums the exporter's own bangui_exporter_*_total counters
	// (reads, errors, reconciliations …) by name, for diagnosis.
	Counters map[string]float64
	// Gauges sums the exporter's own bangui_exporter_* gauges by name.
	Gauges map[string]float64
	// ByCountry holds fail2ban_banned_ips by "jail|country" and
	// fail2ban_recent_bans by "jail|country|window".
	ByCountry map[string]float64
	// BannedZZ is the part of fail2ban_banned_ips without a country.
	BannedZZ float64
}

// sumMetrics parses a text exposition and sums the fail2ban metrics.
func sumMetrics(body io.Reader) (metricSums, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(body)
	if err != nil {
		return metricSums{}, fmt.Errorf("parse /metrics: %w", err)
	}
	sums := metricSums{RecentBans: map[string]float64{}, Counters: map[string]float64{}, Gauges: map[string]float64{}, ByCountry: map[string]float64{}}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.Label {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	value := func(m *dto.Metric) float64 {
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
		return 0
	}
	for name, fam := range families {
		sums.SeriesCount += len(fam.Metric)
		for _, m := range fam.Metric {
			if strings.HasPrefix(name, "bangui_exporter_") {
				switch fam.GetType() {
				case dto.MetricType_COUNTER:
					sums.Counters[name] += value(m)
				case dto.MetricType_GAUGE:
					sums.Gauges[name] += value(m)
				}
			}
			switch name {
			case "fail2ban_up":
				sums.Up = value(m)
			case "fail2ban_banned_ips":
				sums.BannedIPs += value(m)
				sums.ByCountry[label(m, "jail")+"|"+label(m, "country")] += value(m)
				if label(m, "country") == "ZZ" {
					sums.BannedZZ += value(m)
				}
			case "fail2ban_bans_total":
				sums.BansTotal += value(m)
				sums.BansTotalPresent = true
			case "fail2ban_recent_bans":
				sums.RecentBans[label(m, "window")] += value(m)
				sums.ByCountry[label(m, "jail")+"|"+label(m, "country")+"|"+label(m, "window")] += value(m)
			}
		}
	}
	return sums, nil
}
