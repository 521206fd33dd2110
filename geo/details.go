package geo

// Details beyond the country: the autonomous system of an IP (a GeoLite2-ASN
// layout database, or the "as" field ip-api answered) and its place (a
// GeoLite2-City layout database). They answer from memory-mapped databases
// and the memory tier; nothing here writes or queues anything.

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// AS is an autonomous system.
type AS struct {
	Number uint32 `json:"number"`
	Org    string `json:"organization,omitempty"`
}

// String is "AS15169 Google LLC" (ip-api's spelling).
func (a AS) String() string {
	if a.Number == 0 {
		return ""
	}
	s := "AS" + strconv.FormatUint(uint64(a.Number), 10)
	if a.Org != "" {
		s += " " + a.Org
	}
	return s
}

// ParseAS reads ip-api's "as" field, "AS15169 Google LLC"; ok is false for
// anything else (an empty field, no number).
func ParseAS(s string) (AS, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 3 || !strings.EqualFold(s[:2], "AS") {
		return AS{}, false
	}
	num, org, _ := strings.Cut(s[2:], " ")
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 {
		return AS{}, false
	}
	return AS{Number: uint32(n), Org: strings.TrimSpace(org)}, true
}

// Place is where a City database puts an IP.
type Place struct {
	Country string `json:"country,omitempty"` // ISO 3166-1 alpha-2
	City    string `json:"city,omitempty"`    // English name; empty when the database has none
	// Latitude and Longitude are the database's coordinates, valid when
	// HasLocation is set.
	Latitude    float64 `json:"latitude"`
	Longitude   float64 `json:"longitude"`
	HasLocation bool    `json:"-"`
}

// cityRecord holds the fields of GeoLite2-City's layout a Place needs.
type cityRecord struct {
	Country           mmdbCountry `maxminddb:"country"`
	RegisteredCountry mmdbCountry `maxminddb:"registered_country"`
	City              struct {
		Names struct {
			EN string `maxminddb:"en"`
		} `maxminddb:"names"`
	} `maxminddb:"city"`
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

// asnRecord is GeoLite2-ASN's layout (also the ip-location-db ASN
// databases').
type asnRecord struct {
	Number uint32 `maxminddb:"autonomous_system_number"`
	Org    string `maxminddb:"autonomous_system_organization"`
}

// detailCache holds decoded City and ASN records by their offset, like
// MMDB.answers for countries; it belongs to the reader in use.
type detailCache struct {
	places map[uintptr]Place
	ases   map[uintptr]AS
}

// DatabaseType is the loaded database's type ("GeoLite2-City",
// "GeoLite2-ASN", ...), "" while none is loaded.
func (m *MMDB) DatabaseType() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.reader == nil {
		return ""
	}
	return m.reader.Metadata.DatabaseType
}

// HasPlaces reports whether the loaded database is in a City layout (its
// type names a City database): Place answers then.
func (m *MMDB) HasPlaces() bool {
	return strings.Contains(strings.ToLower(m.DatabaseType()), "city")
}

// Place returns where the loaded database puts ip; ok is false when no
// database is loaded or it does not know ip. Any layout answers, but only a
// City layout has cities and coordinates.
func (m *MMDB) Place(ip netip.Addr) (Place, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	res, ok := m.findLocked(ip)
	if !ok {
		return Place{}, false
	}
	m.answersMu.Lock()
	defer m.answersMu.Unlock()
	if p, ok := m.details.places[res.Offset()]; ok {
		return p, true
	}
	var rec cityRecord
	if err := res.Decode(&rec); err != nil {
		return Place{}, false
	}
	p := Place{Country: rec.Country.ISOCode, City: rec.City.Names.EN}
	if p.Country == "" {
		p.Country = rec.RegisteredCountry.ISOCode
	}
	if rec.Location.Latitude != nil && rec.Location.Longitude != nil {
		p.Latitude, p.Longitude, p.HasLocation = *rec.Location.Latitude, *rec.Location.Longitude, true
	}
	if m.details.places == nil {
		m.details.places = map[uintptr]Place{}
	}
	if len(m.details.places) < maxCachedRecords {
		m.details.places[res.Offset()] = p
	}
	return p, true
}

// AS returns ip's autonomous system from a database in GeoLite2-ASN's
// layout; ok is false when no database is loaded, it does not know ip, or
// its record has no AS number.
func (m *MMDB) AS(ip netip.Addr) (AS, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	res, ok := m.findLocked(ip)
	if !ok {
		return AS{}, false
	}
	m.answersMu.Lock()
	defer m.answersMu.Unlock()
	if a, ok := m.details.ases[res.Offset()]; ok {
		return a, a.Number != 0
	}
	var rec asnRecord
	if err := res.Decode(&rec); err != nil {
		return AS{}, false
	}
	a := AS(rec)
	if m.details.ases == nil {
		m.details.ases = map[uintptr]AS{}
	}
	if len(m.details.ases) < maxCachedRecords {
		m.details.ases[res.Offset()] = a
	}
	return a, a.Number != 0
}

// findLocked looks ip up in the loaded database (m.mu held shared).
func (m *MMDB) findLocked(ip netip.Addr) (maxminddb.Result, bool) {
	if m.reader == nil {
		return maxminddb.Result{}, false
	}
	ip = ip.Unmap()
	if ip.Is6() && m.reader.Metadata.IPVersion == 4 {
		return maxminddb.Result{}, false
	}
	res := m.reader.Lookup(ip)
	if res.Err() != nil || !res.Found() {
		return maxminddb.Result{}, false
	}
	return res, true
}

// CachedAS returns the autonomous system the memory tier holds for ip (ip-api
// answers with its "as" field); ok is false when it holds none. Unlike
// Lookup it never queues anything.
func (r *Resolver) CachedAS(ip netip.Addr) (AS, bool) {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	ce, found := r.entries.get(k)
	s := ""
	if found && ce.asn != 0 {
		s = r.asns.get(ce.asn)
	}
	r.mu.Unlock()
	return ParseAS(s)
}

// CachedCountryName returns the English country name the memory tier holds
// for ip ("" when none).
func (r *Resolver) CachedCountryName(ip netip.Addr) string {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	defer r.mu.Unlock()
	ce, _ := r.entries.get(k)
	return r.texts.get(ce.nameIndex())
}

// Providers returns the resolver's providers in the order they are asked
// (main finds the mmdb provider's database there for places).
func (r *Resolver) Providers() []Provider {
	out := make([]Provider, len(r.stages))
	for i, st := range r.stages {
		out[i] = st.provider
	}
	return out
}
