// Package collector reads fail2ban's SQLite database strictly read-only,
// keeps bans per jail and per country in memory, updated incrementally, and
// exposes them as Prometheus metrics.
//
// # Vocabulary
//
//   - sourceRow: a row of fail2ban's bans or bips table as the source read it.
//   - bansRow: the engine's copy of one row of fail2ban's bans table.
//   - bipsRow: the engine's copy of one row of fail2ban's bips table (schema
//     4), or the latest ban of an (ip, jail) pair derived from bans (schema 2).
//   - ban event: one distinct (jail, ip, timeofban); banEvent in the engine's
//     window index, archive.Event in the ban archive. Duplicate bans rows are
//     one ban event.
//   - series: one (jail, country) label set (seriesKey).
//
// # Files
//
//   - collector.go: the metric descriptions, the snapshot a scrape exposes, Collect.
//   - refresh.go: the Exporter's lifecycle and refresh.
//   - dbsync.go: the protocol that keeps the engine equal to the database.
//   - source.go: every SQL statement on fail2ban's database but one.
//   - fingerprint.go: the rowid-bucket fingerprint, in Go and in SQL.
//   - engine.go: the engine's state, bans rows, the clock.
//   - windows.go: the window index of ban events (fail2ban_recent_bans).
//   - currentbans.go: bips rows and expiries (fail2ban_banned_ips).
//   - ips.go: IP, jail and country interning; country changes.
//   - history.go: offers to the ban archive and the history load.
//   - backfill.go: the archive's backfill of a large startup read.
package collector
