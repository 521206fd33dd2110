package collector

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
)

// TestJailNameNotUTF8: fail2ban stores a jail's name as whatever bytes it
// was given. A name that is not UTF-8 is a label value client_golang
// refuses (MustNewConstMetric panics), so the engine replaces the bad bytes
// with U+FFFD: the scrape serves every jail, the bad one under its
// repaired name, and nothing panics.
func TestJailNameNotUTF8(t *testing.T) {
	tests := []struct {
		name   string
		schema int
	}{
		{"schema 4", 4},
		{"schema 2", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := f2bgen.DefaultSpec(2_000, benchNow)
			spec.Schema = tt.schema
			path := f2bgen.GenerateT(t, spec)
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			// CAST keeps it TEXT, as fail2ban writes names.
			stmts := []string{
				"UPDATE jails SET name = CAST(X'737368642dff' AS TEXT) WHERE name = 'sshd'",
				"UPDATE bans SET jail = CAST(X'737368642dff' AS TEXT) WHERE jail = 'sshd'",
			}
			if tt.schema == 4 {
				stmts = append(stmts, "UPDATE bips SET jail = CAST(X'737368642dff' AS TEXT) WHERE jail = 'sshd'")
			}
			for _, stmt := range stmts {
				if _, err := db.Exec(stmt); err != nil {
					t.Fatal(err)
				}
			}
			_ = db.Close()

			x := newFixtureExporter(t, path, newClock(benchNow.Unix()), NoCountries{}, Options{})
			s := scrape(t, x)
			if s["fail2ban_up{}"] != 1 {
				t.Fatalf("fail2ban_up = %v", s["fail2ban_up{}"])
			}
			repaired := "jail=sshd-\uFFFD"
			var enabled, banned bool
			for k, v := range s {
				switch {
				case strings.HasPrefix(k, "fail2ban_jail_enabled{") && strings.Contains(k, repaired):
					enabled = v == 1
				case (strings.HasPrefix(k, "fail2ban_banned_ips{") || strings.HasPrefix(k, "fail2ban_recent_bans{")) && strings.Contains(k, repaired):
					banned = banned || v > 0
				}
			}
			if !enabled || !banned {
				t.Fatalf("no series of the repaired jail %q (enabled %v, banned or recent %v)", repaired, enabled, banned)
			}
		})
	}
}
