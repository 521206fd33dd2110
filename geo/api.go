// Package geo resolves banned IPs to countries off the scrape path: a memory
// cache backed by the geo_cache table in the app database, local
// MaxMind-format databases, ip-api.com batch lookups, a background resolver
// and batched persistence (one transaction per flush).
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
}

// ProviderStatus describes one provider's state for the admin API.
type ProviderStatus struct {
	Name string `json:"name"`
	// Mmdb only.
	Path         string    `json:"path,omitempty"`
	BuildTime    time.Time `json:"build_time,omitzero"`
	DatabaseType string    `json:"database_type,omitempty"`
	// Ip-api only.
	URL                string    `json:"url,omitempty"`
	RateLimitRemaining *int      `json:"rate_limit_remaining,omitempty"`
	RateLimitReset     time.Time `json:"rate_limit_reset,omitzero"`
	BlockedUntil       time.Time `json:"blocked_until,omitzero"`
	LastError          string    `json:"last_error,omitempty"`
}

// Status is a snapshot of the geo subsystem for the admin API.
type Status struct {
	Resolved        int              `json:"resolved"`
	Unresolved      int              `json:"unresolved"`
	Pending         int              `json:"pending"`
	Providers       []ProviderStatus `json:"providers"`
	LastFlush       time.Time        `json:"last_flush,omitzero"`
	LastFlushError  string           `json:"last_flush_error,omitempty"`
	LastFlushedRows int              `json:"last_flushed_rows"`
}
