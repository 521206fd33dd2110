package socket

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestResolveDBPath(t *testing.T) {
	const fallback = "/var/lib/fail2ban/fail2ban.sqlite3"
	tests := []struct {
		name    string
		dbFile  string // sandbox dbfile override; "-" = no fail2ban at all
		given   bool
		want    string // "SANDBOX" = the sandbox's DB path
		wantLog string
	}{
		{name: "flag given wins", given: true, want: fallback},
		{name: "from the socket", want: "SANDBOX", wantLog: "as its socket reports it"},
		{name: "dbfile None", dbFile: "None", want: "", wantLog: "dbfile = None"},
		{name: "dbfile :memory:", dbFile: ":memory:", want: "", wantLog: "dbfile = :memory:"},
		{name: "socket absent", dbFile: "-", want: fallback, wantLog: "did not tell"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(shortTempDir(t), "absent.sock")
			want := tt.want
			if tt.dbFile != "-" {
				opts := f2bsandbox.Options{}
				if tt.dbFile != "" {
					opts.DBFile = tt.dbFile
				}
				sb := f2bsandbox.StartT(t, opts)
				path = sb.Socket()
				if want == "SANDBOX" {
					want = sb.DBPath()
				}
			}
			client := New(Options{Path: path, Timeout: 2 * time.Second})
			defer func() { _ = client.Close() }()
			logs := &testkit.LogBuffer{}
			got := ResolveDBPath(context.Background(), client, slog.New(slog.NewTextHandler(logs, nil)), fallback, tt.given)
			if got != want {
				t.Fatalf("got %q, want %q; logs:\n%s", got, want, logs)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
			if tt.given && client.Dials() != 0 {
				t.Errorf("asked the socket although the path was given")
			}
		})
	}
}
