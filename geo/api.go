// Package geo resolves banned IPs to countries off the scrape path: a memory
// cache backed by the geo_cache table in the app database, local
// MaxMind-format databases, ip-api.com batch lookups, a background resolver
// and batched persistence (one transaction per flush).
//
// The engine talks to a Resolver through collector.CountryLookup (Track,
// Untrack, Country, Generation); every one of those answers from memory. IPs
// without a country are queued, deduplicated, and resolved in the background
// by a chain of providers (--geo.providers). Results go to the memory tier and
// to a dirty set that Flush writes to the app database in one transaction.
package geo

import (
	"net/netip"
	"time"
)

// Entry is what geo knows about one IP.
type Entry struct {
	IP          netip.Addr `json:"ip"`
	CountryCode string     `json:"country_code,omitempty"` // ISO 3166-1 alpha-2, upper case; empty when unresolved
	CountryName string     `json:"country_name,omitempty"` // English name when the provider gives it
	ASN         string     `json:"asn,omitempty"`          // e.g. "AS15169 Google LLC" when the provider gives it
	Provider    string     `json:"provider,omitempty"`     // "mmdb", "ipapi", "local" (non-global address)
	ResolvedAt  time.Time  `json:"resolved_at,omitzero"`
	FailedAt    time.Time  `json:"failed_at,omitzero"`
	Failures    int        `json:"failures,omitempty"`
	Message     string     `json:"message,omitempty"` // e.g. "private range", or the last error
	Pending     bool       `json:"pending"`           // queued for background resolution
	// Final is true when the answer will not change by asking again (a
	// country, or "private range", "reserved range", "invalid query").
	Final bool `json:"final"`
	// RetryAt is when a failed lookup may be tried again (negative tier).
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Tracked is true while the engine counts the IP.
	Tracked bool `json:"tracked"`
}

// ProviderStatus describes one provider's state for the admin API: the
// fields every provider has, and the provider's own status type (defined in
// its file), whose fields appear inline in the JSON. Exactly one of the
// embedded pointers is set; a new provider adds its own one here.
type ProviderStatus struct {
	Name string `json:"name"`
	*MMDBStatus
	*IPAPIStatus
	LastError string `json:"last_error,omitempty"`
	Queued    int    `json:"queued"` // IPs waiting for this provider
}

// Status is a snapshot of the geo subsystem for the admin API.
type Status struct {
	Resolved        int              `json:"resolved"`
	Unresolved      int              `json:"unresolved"`
	Pending         int              `json:"pending"`
	Tracked         int              `json:"tracked"`
	Dirty           int              `json:"dirty"`
	Generation      uint64           `json:"generation"`
	Providers       []ProviderStatus `json:"providers"`
	LastFlush       time.Time        `json:"last_flush,omitzero"`
	LastFlushError  string           `json:"last_flush_error,omitempty"`
	LastFlushedRows int              `json:"last_flushed_rows"`
}
