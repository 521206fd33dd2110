package geo

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"
)

// ReadCache returns the entries persisted in the geo_cache table, read with
// q: the app database's reader (appdb.DB.Reader) or any read-only
// connection to it. It is what tools and tests use to see what a flush
// wrote, instead of querying geo's table themselves; the resolver never
// calls it. Only persisted fields are set (no Pending, Tracked, RetryAt).
func ReadCache(ctx context.Context, q *sql.DB) ([]Entry, error) {
	rows, err := q.QueryContext(ctx, `SELECT ip, country_code, country_name, asn, provider,
		resolved_at, failed_at, failures, message FROM geo_cache ORDER BY rowid`)
	if err != nil {
		return nil, fmt.Errorf("geo: read geo_cache: %w", err)
	}
	defer rows.Close() //nolint:errcheck // rows.Err reports what matters
	var out []Entry
	for rows.Next() {
		var (
			ipText                             string
			code, name, asn, provider, message sql.NullString
			resolvedAt, failedAt               sql.NullInt64
			failures                           int
		)
		if err := rows.Scan(&ipText, &code, &name, &asn, &provider, &resolvedAt, &failedAt, &failures, &message); err != nil {
			return nil, fmt.Errorf("geo: read geo_cache: %w", err)
		}
		ip, err := netip.ParseAddr(ipText)
		if err != nil {
			return nil, fmt.Errorf("geo: read geo_cache: ip %q: %w", ipText, err)
		}
		e := Entry{
			IP:          ip,
			CountryCode: code.String,
			CountryName: name.String,
			ASN:         asn.String,
			Provider:    provider.String,
			Failures:    failures,
			Message:     message.String,
			Final:       code.String != "" || (failures == 0 && resolvedAt.Valid),
		}
		if resolvedAt.Valid {
			e.ResolvedAt = time.Unix(resolvedAt.Int64, 0).UTC()
		}
		if failedAt.Valid {
			e.FailedAt = time.Unix(failedAt.Int64, 0).UTC()
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("geo: read geo_cache: %w", err)
	}
	return out, nil
}
