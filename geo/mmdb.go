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
)

// MMDB resolves IPs with a local MaxMind-format database: the official
// GeoLite2/GeoIP2 Country and City schema (country.iso_code, falling back to
// registered_country.iso_code) and flat community databases (country_code:
// DB-IP lite, ip-location-db). A new file put in place by rename is picked up
// by Reload; lookups never hit a closed reader.
type MMDB struct {
	path   string
	logger *slog.Logger
	clock  Clock

	mu       sync.RWMutex // lookups hold it shared; swapping the reader holds it exclusively
	reader   *maxminddb.Reader
	file     os.FileInfo // of the loaded file
	failed   os.FileInfo // of the last file that failed to open, so it is not retried until it changes
	loadedAt time.Time
	lastErr  string

	// answers caches decoded records by their offset in the loaded file:
	// a country database has a few thousand distinct records for millions
	// of networks, and decoding is most of a lookup's cost. It belongs to
	// the reader in use and is replaced with it.
	answersMu sync.Mutex
	answers   map[uintptr]Answer
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

// OpenMMDB opens the database at path. A missing or invalid file is an error
// here, at startup; later, a bad replacement only logs and keeps the
// database in use.
func OpenMMDB(path string, logger *slog.Logger, clock Clock) (*MMDB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = SystemClock{}
	}
	m := &MMDB{path: path, logger: logger, clock: clock}
	if _, err := m.Reload(true); err != nil {
		return nil, err
	}
	return m, nil
}

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
// changes again (or force).
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
	m.reader, m.file, m.failed, m.loadedAt, m.lastErr = reader, st, nil, m.clock.Now(), ""
	// No lookup runs while m.mu is held exclusively.
	m.answers = make(map[uintptr]Answer)
	m.mu.Unlock()
	if old != nil {
		// No lookup holds m.mu any more, so none uses old.
		if err := old.Close(); err != nil {
			m.logger.Warn("closing the previous mmdb failed", "err", err)
		}
	}
	m.logger.Info("mmdb loaded", "path", m.path, "database_type", reader.Metadata.DatabaseType,
		"build_time", reader.Metadata.BuildTime().UTC())
	return true, nil
}

func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func (m *MMDB) setErr(err error) error {
	m.mu.Lock()
	m.lastErr = err.Error()
	m.mu.Unlock()
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

// Status implements Provider.
func (m *MMDB) Status() ProviderStatus {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := ProviderStatus{Name: m.Name(), Path: m.path, LoadedAt: m.loadedAt, LastError: m.lastErr}
	if m.reader != nil {
		s.BuildTime = m.reader.Metadata.BuildTime().UTC()
		s.DatabaseType = m.reader.Metadata.DatabaseType
	}
	return s
}
