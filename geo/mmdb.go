package geo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// MMDB resolves IPs with a local MaxMind-format database: the official
// GeoLite2/GeoIP2 Country and City schema (country.iso_code, falling back to
// registered_country.iso_code) and flat community databases (country_code:
// DB-IP lite, ip-location-db). A new file put in place by rename is picked up
// by Reload; lookups never hit a closed reader. ("Record" in this file is
// MaxMind's word for one entry of the database's data section.)
//
// A file that is missing or invalid does not stop the exporter: the state
// is logged once per change (not on every check) and exported as metrics,
// and the file is loaded as soon as a good one appears.
type MMDB struct {
	path          string
	logger        *slog.Logger
	clock         Clock
	checkInterval time.Duration

	mu       sync.RWMutex // lookups hold it shared; swapping the reader holds it exclusively
	reader   *maxminddb.Reader
	file     os.FileInfo // of the loaded file
	failed   os.FileInfo // of the last file that failed to open, so it is not retried until it changes
	loadedAt time.Time
	lastErr  string
	// problem is the last load problem logged and counted ("" after a
	// successful load), so a file missing for a day logs one line, not one
	// per check.
	problem    string
	loadErrors uint64

	// answers caches decoded records by their offset in the loaded file:
	// a country database has a few thousand distinct records for millions
	// of networks, and decoding is most of a lookup's cost. It belongs to
	// the reader in use and is replaced with it.
	answersMu sync.Mutex
	answers   map[uintptr]Answer
	// details caches decoded City and ASN records the same way
	// (details.go), under answersMu.
	details detailCache
}

// MMDBOptions configure the mmdb provider.
type MMDBOptions struct {
	// Path of the database file (required).
	Path string
	// CheckInterval is how often the resolver checks the file for a
	// replacement; 0 disables the timer (Reload still works).
	CheckInterval time.Duration
	Logger        *slog.Logger
	// Clock defaults to the system clock.
	Clock Clock
}

// maxCachedRecords bounds the decoded-record cache (City databases have
// more distinct records than Country ones).
const maxCachedRecords = 200_000

// mmdbRecord holds the fields geo reads from both schemas.
type mmdbRecord struct {
	Country           mmdbCountry `maxminddb:"country"`
	RegisteredCountry mmdbCountry `maxminddb:"registered_country"`
	CountryCode       string      `maxminddb:"country_code"` // flat schema
}

type mmdbCountry struct {
	ISOCode string `maxminddb:"iso_code"`
	Names   struct {
		EN string `maxminddb:"en"`
	} `maxminddb:"names"`
}

// NewMMDB returns the mmdb provider and tries the first load. A file that is
// missing or invalid is not an error: the provider reports it (log, status,
// metrics), answers every lookup with an error (so the next provider is
// asked) and loads the file when a good one appears. Only options that can
// never work are errors.
func NewMMDB(opts MMDBOptions) (*MMDB, error) {
	if opts.Path == "" {
		return nil, errors.New("mmdb: no database path")
	}
	if opts.CheckInterval < 0 {
		return nil, fmt.Errorf("mmdb: negative check interval %s", opts.CheckInterval)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	m := &MMDB{path: opts.Path, logger: opts.Logger, clock: opts.Clock, checkInterval: opts.CheckInterval}
	_, _ = m.Reload(true) // reported by the provider itself
	return m, nil
}

// OpenMMDB opens the database at path and fails when it cannot be loaded:
// for tools and tests that need the data now. The exporter uses NewMMDB.
func OpenMMDB(path string, logger *slog.Logger, clock Clock) (*MMDB, error) {
	m, err := NewMMDB(MMDBOptions{Path: path, Logger: logger, Clock: clock, CheckInterval: DefaultCheckInterval})
	if err != nil {
		return nil, err
	}
	if !m.Loaded() {
		return nil, errors.New(m.Status().LastError)
	}
	return m, nil
}

// Loaded reports whether a database is in use.
func (m *MMDB) Loaded() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.reader != nil
}

// CheckInterval implements Reloader.
func (m *MMDB) CheckInterval() time.Duration { return m.checkInterval }

// Name implements Provider.
func (m *MMDB) Name() string { return "mmdb" }

// MaxBatch implements Provider.
func (m *MMDB) MaxBatch() int { return 1000 }

// Lookup implements Provider.
func (m *MMDB) Lookup(_ context.Context, ips []netip.Addr) ([]Answer, error) {
	answers := make([]Answer, len(ips))
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.reader == nil {
		return nil, errors.New("mmdb: no database loaded")
	}
	m.answersMu.Lock()
	defer m.answersMu.Unlock()
	for i, ip := range ips {
		answers[i] = m.lookupLocked(ip)
	}
	return answers, nil
}

func (m *MMDB) lookupLocked(ip netip.Addr) Answer {
	ip = ip.Unmap()
	if ip.Is6() && m.reader.Metadata.IPVersion == 4 {
		return Answer{Kind: AnswerNotFound}
	}
	res := m.reader.Lookup(ip)
	if err := res.Err(); err != nil {
		return Answer{Kind: AnswerError, Message: "mmdb lookup error"}
	}
	if !res.Found() {
		return Answer{Kind: AnswerNotFound}
	}
	if a, ok := m.answers[res.Offset()]; ok {
		return a
	}
	a := decodeAnswer(res)
	if a.Kind != AnswerError && len(m.answers) < maxCachedRecords {
		m.answers[res.Offset()] = a
	}
	return a
}

// decodeAnswer decodes one record of either schema.
func decodeAnswer(res maxminddb.Result) Answer {
	var rec mmdbRecord
	if err := res.Decode(&rec); err != nil {
		return Answer{Kind: AnswerError, Message: "mmdb record not understood"}
	}
	switch {
	case rec.Country.ISOCode != "":
		return Answer{Kind: AnswerFound, CountryCode: rec.Country.ISOCode, CountryName: rec.Country.Names.EN}
	case rec.RegisteredCountry.ISOCode != "":
		return Answer{Kind: AnswerFound, CountryCode: rec.RegisteredCountry.ISOCode, CountryName: rec.RegisteredCountry.Names.EN}
	case rec.CountryCode != "":
		return Answer{Kind: AnswerFound, CountryCode: rec.CountryCode}
	}
	return Answer{Kind: AnswerNotFound}
}

// Reload implements Reloader: it opens the file again when its size,
// modification time or identity (inode) changed, or always when force is
// set. The old reader is closed only after the new one is in place and no
// lookup uses it any more. A file that fails to open is not retried until it
// changes again (or force). A new problem (a missing file, each invalid
// file) is logged and counted once; a successful load after one is logged.
func (m *MMDB) Reload(force bool) (bool, error) {
	st, err := os.Stat(m.path)
	if err != nil {
		return false, m.setErr(fmt.Errorf("mmdb: %w", err))
	}
	m.mu.RLock()
	unchanged := m.file != nil && sameFile(m.file, st)
	failedBefore := m.failed != nil && sameFile(m.failed, st)
	m.mu.RUnlock()
	if !force && (unchanged || failedBefore) {
		return false, nil
	}
	reader, err := maxminddb.Open(m.path)
	if err == nil && reader.Metadata.IPVersion != 4 && reader.Metadata.IPVersion != 6 {
		_ = reader.Close() // unusable anyway; the version error is what matters
		err = fmt.Errorf("unsupported ip_version %d", reader.Metadata.IPVersion)
	}
	if err != nil {
		m.mu.Lock()
		m.failed = st
		m.mu.Unlock()
		return false, m.setErr(fmt.Errorf("mmdb: open %s: %w", m.path, err))
	}
	m.mu.Lock()
	old := m.reader
	recovered := m.problem != ""
	m.reader, m.file, m.failed, m.loadedAt, m.lastErr, m.problem = reader, st, nil, m.clock.Now(), "", ""
	// No lookup runs while m.mu is held exclusively.
	m.answers = make(map[uintptr]Answer)
	m.details = detailCache{}
	m.mu.Unlock()
	if old != nil {
		// No lookup holds m.mu any more, so none uses old.
		if err := old.Close(); err != nil {
			m.logger.Warn("closing the previous mmdb failed", "err", err)
		}
	}
	m.logger.Info("mmdb loaded", "path", m.path, "database_type", reader.Metadata.DatabaseType,
		"build_time", reader.Metadata.BuildTime().UTC(), "after_problem", recovered)
	return true, nil
}

func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// setErr records a failed load; a problem other than the last one logged
// is logged once and counted.
func (m *MMDB) setErr(err error) error {
	m.mu.Lock()
	m.lastErr = err.Error()
	isNew := m.lastErr != m.problem
	if isNew {
		m.problem = m.lastErr
		m.loadErrors++
	}
	loaded := m.reader != nil
	m.mu.Unlock()
	if isNew {
		if loaded {
			m.logger.Warn("mmdb file cannot be loaded; the database loaded before stays in use until a good file appears", "err", err)
		} else {
			m.logger.Warn("mmdb file cannot be loaded; no local database in use (lookups go to the next provider) until a good file appears", "err", err)
		}
	}
	return err
}

// Close releases the database.
func (m *MMDB) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reader == nil {
		return nil
	}
	err := m.reader.Close()
	m.reader = nil
	return err
}

func (m *MMDB) buildTime() (time.Time, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.reader == nil {
		return time.Time{}, false
	}
	return m.reader.Metadata.BuildTime(), true
}

// MMDBStatus is the mmdb provider's part of ProviderStatus.
type MMDBStatus struct {
	Path         string    `json:"path,omitempty"`
	Loaded       bool      `json:"loaded"`
	BuildTime    time.Time `json:"build_time,omitzero"`
	DatabaseType string    `json:"database_type,omitempty"`
	LoadedAt     time.Time `json:"loaded_at,omitzero"`
	LoadErrors   uint64    `json:"load_errors"`
}

// Status implements Provider.
func (m *MMDB) Status() ProviderStatus {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := &MMDBStatus{Path: m.path, Loaded: m.reader != nil, LoadedAt: m.loadedAt, LoadErrors: m.loadErrors}
	if m.reader != nil {
		s.BuildTime = m.reader.Metadata.BuildTime().UTC()
		s.DatabaseType = m.reader.Metadata.DatabaseType
	}
	return ProviderStatus{Name: m.Name(), MMDBStatus: s, LastError: m.lastErr}
}

var (
	mmdbBuildTimeDesc = prometheus.NewDesc(namespace+"mmdb_build_timestamp_seconds",
		"Build time of the MaxMind-format database in use (absent while none is loaded).", nil, nil)
	mmdbLoadedDesc = prometheus.NewDesc(namespace+"mmdb_loaded",
		"1 while a MaxMind-format database (--geo.mmdb) is loaded and answers lookups, 0 while none is (file missing or invalid since the start).", nil, nil)
	mmdbLastLoadDesc = prometheus.NewDesc(namespace+"mmdb_last_load_success_timestamp_seconds",
		"Time of the last successful load of --geo.mmdb (absent before the first).", nil, nil)
	mmdbLoadErrorsDesc = prometheus.NewDesc(namespace+"mmdb_load_errors_total",
		"Failed loads of --geo.mmdb, counted once per problem: a missing file once until it appears, each invalid file once.", nil, nil)
)

// Describe implements prometheus.Collector; the resolver's collector
// includes it.
func (m *MMDB) Describe(ch chan<- *prometheus.Desc) {
	ch <- mmdbBuildTimeDesc
	ch <- mmdbLoadedDesc
	ch <- mmdbLastLoadDesc
	ch <- mmdbLoadErrorsDesc
}

// Collect implements prometheus.Collector.
func (m *MMDB) Collect(ch chan<- prometheus.Metric) {
	build, loaded := m.buildTime()
	m.mu.RLock()
	loadedAt, loadErrors := m.loadedAt, m.loadErrors
	m.mu.RUnlock()
	if loaded {
		ch <- prometheus.MustNewConstMetric(mmdbBuildTimeDesc, prometheus.GaugeValue, float64(build.Unix()))
		ch <- prometheus.MustNewConstMetric(mmdbLoadedDesc, prometheus.GaugeValue, 1)
	} else {
		ch <- prometheus.MustNewConstMetric(mmdbLoadedDesc, prometheus.GaugeValue, 0)
	}
	if !loadedAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(mmdbLastLoadDesc, prometheus.GaugeValue, float64(loadedAt.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(mmdbLoadErrorsDesc, prometheus.CounterValue, float64(loadErrors))
}
