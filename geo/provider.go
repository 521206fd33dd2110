package geo

import (
	"context"
	"net/netip"
	"time"
)

// Provider resolves IPs to countries. Implementations: MMDB (a local
// MaxMind-format database) and IPAPI (ip-api.com's batch endpoint).
//
// Adding a provider: a file in this package with the type implementing
// Provider, its status type embedded in ProviderStatus (api.go), and, when
// it has metrics, prometheus.Collector (the resolver's collector includes
// every provider that is one); when it has on-disk data, Reloader. Then one
// entry in main's provider registry (main_geo_providers.go) with its flags.
// DEVELOPERS.md has the recipe.
type Provider interface {
	// Name is the provider's name in --geo.providers, metrics and the geo_cache
	// table ("mmdb", "ipapi").
	Name() string
	// MaxBatch is the largest number of IPs one Lookup call takes.
	MaxBatch() int
	// Lookup resolves ips (at most MaxBatch, all global addresses) and returns
	// one Answer per IP in the same order. An error means the whole batch
	// failed (every IP counts as AnswerError). Lookup may wait, for instance
	// for a rate limit, but returns promptly when ctx is done.
	Lookup(ctx context.Context, ips []netip.Addr) ([]Answer, error)
	// Status describes the provider for the admin API.
	Status() ProviderStatus
}

// Reloader is a Provider whose data can change on disk (MMDB).
type Reloader interface {
	// Reload reopens the data when it changed on disk, or always when force
	// is set. It reports whether new data was loaded.
	Reload(force bool) (bool, error)
	// CheckInterval is how often the resolver calls Reload(false); 0: never
	// (Resolver.Reload still does).
	CheckInterval() time.Duration
}

// AnswerKind classifies one provider answer.
type AnswerKind uint8

const (
	// AnswerError: the lookup failed; the next provider is asked, and when
	// none is left the IP goes to the negative tier (retried with backoff).
	AnswerError AnswerKind = iota
	// AnswerFound: the provider knows the country.
	AnswerFound
	// AnswerNotFound: the provider does not know the IP; the next provider is
	// asked, and when none is left the IP goes to the negative tier.
	AnswerNotFound
	// AnswerNoCountry: a final answer without a country ("private range",
	// "reserved range", "invalid query"); never retried.
	AnswerNoCountry
)

// Answer is one provider's answer for one IP.
type Answer struct {
	Kind        AnswerKind
	CountryCode string // AnswerFound: ISO 3166-1 alpha-2, upper case
	CountryName string // optional English name
	ASN         string // optional, e.g. "AS15169 Google LLC"
	Message     string // AnswerNoCountry and AnswerError: why
}

// resultLabel is the lookups_total result label of an answer kind.
func (k AnswerKind) resultLabel() string {
	switch k {
	case AnswerFound:
		return "found"
	case AnswerNotFound:
		return "not_found"
	case AnswerNoCountry:
		return "no_country"
	default:
		return "error"
	}
}

var resultLabels = []string{"found", "not_found", "no_country", "error"}

// validCountryCode reports whether code is two upper-case ASCII letters.
func validCountryCode(code string) bool {
	return len(code) == 2 && code[0] >= 'A' && code[0] <= 'Z' && code[1] >= 'A' && code[1] <= 'Z'
}

// countryStrings holds every two-letter code as a string, so Country returns
// one without allocating. It is filled once and never changed.
var countryStrings = func() (t [26 * 26]string) {
	for i := range 26 {
		for j := range 26 {
			t[i*26+j] = string([]byte{byte('A' + i), byte('A' + j)})
		}
	}
	return t
}()

// countryString returns code as a string without allocating.
func countryString(code [2]byte) string {
	if code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' {
		return ""
	}
	return countryStrings[int(code[0]-'A')*26+int(code[1]-'A')]
}
