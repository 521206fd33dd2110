package banmap

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/language/display"
)

// Routes of the list, mounted under the admin API's authentication.
const (
	PathBans          = "/api/bans"
	PathBansByCountry = "/api/bans/by-country"
)

// Limits of GET /api/bans.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Ban is one row of GET /api/bans: a (jail, IP) pair banned right now.
type Ban struct {
	IP          string  `json:"ip"`
	Jail        string  `json:"jail"`
	Country     string  `json:"country"`
	CountryName string  `json:"country_name,omitempty"`
	ASN         uint32  `json:"asn,omitempty"`
	ASOrg       string  `json:"as_org,omitempty"`
	City        string  `json:"city,omitempty"`
	Latitude    float64 `json:"latitude,omitempty"`
	Longitude   float64 `json:"longitude,omitempty"`
	// TimeOfBan is fail2ban's timeofban.
	TimeOfBan time.Time `json:"time_of_ban"`
	// BanTime is the ban's length in seconds, -1 for permanent.
	BanTime int64 `json:"ban_time"`
	// BanEnds is when the ban ends (absent for a permanent ban).
	BanEnds time.Time `json:"ban_ends,omitzero"`
	// BanCount is fail2ban's bancount (0: the database has none).
	BanCount uint32 `json:"ban_count"`
}

// BansPage is the answer of GET /api/bans.
type BansPage struct {
	Bans []Ban `json:"bans"`
	// NextCursor, when set, fetches the next page (?cursor=...).
	NextCursor string `json:"next_cursor,omitempty"`
	// Total is how many banned pairs match the filter.
	Total int `json:"total"`
	// UpdatedAt is when the list was computed (once a minute, in the
	// background).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// ByCountry is the answer of GET /api/bans/by-country, in BanGUI's map
// shape: country code → banned IPs, and code → English name.
type ByCountry struct {
	Countries    map[string]int    `json:"countries"`
	CountryNames map[string]string `json:"country_names"`
	Total        int               `json:"total"`
	UpdatedAt    time.Time         `json:"updated_at,omitzero"`
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// listOrUnavailable returns the latest list, or answers 503 when the list
// is off or not computed yet.
func (m *Maps) listOrUnavailable(w http.ResponseWriter) (*snapshot, bool) {
	s := m.snap.Load()
	if !m.opts.List {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"the list of banned IPs is off in this exporter"})
		return nil, false
	}
	if s.list == nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"the list of banned IPs is not computed yet"})
		return nil, false
	}
	return s, true
}

// ServeBans serves GET /api/bans?country=DE&jail=sshd&limit=100&cursor=...
// from the latest snapshot: no database read or write.
func (m *Maps) ServeBans(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			writeJSON(w, http.StatusBadRequest, errorBody{"limit must be a number from 1 to " + strconv.Itoa(MaxLimit)})
			return
		}
		limit = n
	}
	country := strings.ToUpper(q.Get("country"))
	if country != "" && !validCountry(country) {
		writeJSON(w, http.StatusBadRequest, errorBody{"country must be an ISO 3166-1 alpha-2 code (ZZ: unknown)"})
		return
	}
	var after *position
	if c := q.Get("cursor"); c != "" {
		p, err := decodeCursor(c)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		after = &p
	}
	s, ok := m.listOrUnavailable(w)
	if !ok {
		return
	}
	entries, more, total := s.list.query(q.Get("jail"), country, after, limit)
	page := BansPage{Bans: make([]Ban, 0, len(entries)), Total: total, UpdatedAt: s.at.UTC()}
	for i := range entries {
		page.Bans = append(page.Bans, m.ban(s.list, &entries[i]))
	}
	if more {
		page.NextCursor = encodeCursor(s.list.pos(&entries[len(entries)-1]))
	}
	writeJSON(w, http.StatusOK, page)
}

// ban completes one entry with its AS and place, looked up in memory.
func (m *Maps) ban(l *banList, e *entry) Ban {
	ip := netip.AddrFrom16(e.ip).Unmap()
	b := Ban{
		IP:        ip.String(),
		Jail:      l.jails[e.jail],
		Country:   l.countries[e.country],
		TimeOfBan: time.Unix(int64(e.timeOfBan), 0).UTC(),
		BanTime:   int64(e.bantime),
		BanCount:  e.bancount,
	}
	b.CountryName = countryName(b.Country)
	if e.bantime >= 0 {
		b.BanEnds = b.TimeOfBan.Add(time.Duration(e.bantime) * time.Second)
	}
	if a, ok := lookupAS(m.opts.AS, ip); ok {
		b.ASN, b.ASOrg = a.Number, a.Org
	}
	if m.opts.Places != nil {
		if p, ok := m.opts.Places.Place(ip); ok {
			b.City = p.City
			if p.HasLocation {
				b.Latitude, b.Longitude = p.Latitude, p.Longitude
			}
		}
	}
	return b
}

// ServeByCountry serves GET /api/bans/by-country.
func (m *Maps) ServeByCountry(w http.ResponseWriter, _ *http.Request) {
	s, ok := m.listOrUnavailable(w)
	if !ok {
		return
	}
	out := ByCountry{Countries: make(map[string]int, len(s.list.byCountry)), CountryNames: map[string]string{}, Total: len(s.list.entries), UpdatedAt: s.at.UTC()}
	for c, n := range s.list.byCountry {
		out.Countries[c] = n
		out.CountryNames[c] = countryName(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func validCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}

var regionNamer = display.English.Regions()

// countryName is the English (CLDR) name of an ISO 3166-1 alpha-2 code,
// "Unknown" for ZZ, "" for anything else.
func countryName(code string) string {
	if code == "ZZ" {
		return "Unknown"
	}
	region, err := language.ParseRegion(code)
	if err != nil {
		return ""
	}
	if name := regionNamer.Name(region); name != code {
		return name
	}
	return ""
}
