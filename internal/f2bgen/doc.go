// Package f2bgen builds realistic synthetic fail2ban databases for tests and
// benchmarks, in exactly the schema fail2ban creates (version 4 as fail2ban
// 0.11–1.1 writes it, or version 2 of fail2ban 0.9–0.10), and mutates them the
// way a running fail2ban-server does: one transaction per ban (INSERT into
// bans plus INSERT OR REPLACE into bips), unban (DELETE from bips and bans),
// and fail2ban's hourly purge.
//
// A generated database is a deterministic function of its Spec: the same Spec
// (seed, row count, end time, …) yields the same rows in the same order.
// History ends at Spec.Now and reaches back Spec.History (30 days by default);
// repeat offenders in jails with bantime.increment get the doubling bantime
// and growing bancount fail2ban gives them, the recidive jail bans for ever
// (bantime -1), a few rows are exact duplicates (fail2ban issue 1844), and the
// data column holds the UTF-8 JSON bytes Python's sqlite3 adapter stores.
//
// Generate writes a new file; GenerateT and CachedPathT give tests and Go
// benchmarks a database per Spec built once and cached; OpenWriter opens an
// existing database as fail2ban's own connection does and appends bans,
// unbans and purges.
package f2bgen
