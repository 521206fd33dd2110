package main

import (
	"testing"

	"github.com/alecthomas/kingpin/v2"
)

func TestFail2banDBGiven(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want bool
		path string
	}{
		{"default", nil, false, "/var/lib/fail2ban/fail2ban.sqlite3"},
		{"equals form", []string{"--fail2ban.db=/tmp/x.sqlite3"}, true, "/tmp/x.sqlite3"},
		{"separate form", []string{"--fail2ban.db", "/tmp/y.sqlite3"}, true, "/tmp/y.sqlite3"},
		{"same as default", []string{"--fail2ban.db=/var/lib/fail2ban/fail2ban.sqlite3"}, true, "/var/lib/fail2ban/fail2ban.sqlite3"},
		{"other flag", []string{"--fail2ban.default-bantime=1h"}, false, "/var/lib/fail2ban/fail2ban.sqlite3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := kingpin.New("test", "")
			f := addCoreFlags(app)
			if _, err := app.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if f.fail2banDBGiven != tc.want || *f.fail2banDB != tc.path {
				t.Errorf("given = %v, path = %q; want %v, %q", f.fail2banDBGiven, *f.fail2banDB, tc.want, tc.path)
			}
		})
	}
}
