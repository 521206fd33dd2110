package geo

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestStandardMMDBPaths(t *testing.T) {
	want := []string{
		"/var/lib/GeoIP/GeoLite2-Country.mmdb",
		"/var/lib/GeoIP/GeoIP2-Country.mmdb",
		"/usr/share/GeoIP/GeoLite2-Country.mmdb",
		"/usr/share/GeoIP/GeoIP2-Country.mmdb",
	}
	if got := StandardMMDBPaths(); !slices.Equal(got, want) {
		t.Errorf("StandardMMDBPaths() = %v, want %v", got, want)
	}
}

func TestDiscoverMMDB(t *testing.T) {
	// Each case lays out files under a temporary root (name -> content;
	// a name ending in / is a directory) and asks for the standard names
	// under var/ then usr/.
	names := []string{"var/GeoLite2-Country.mmdb", "var/GeoIP2-Country.mmdb", "usr/GeoLite2-Country.mmdb", "usr/GeoIP2-Country.mmdb"}
	cases := []struct {
		name        string
		files       map[string]string
		unreadable  []string
		want        string // relative to the root; "" = none
		wantSkipped []string
	}{
		{name: "nothing anywhere"},
		{name: "geolite in var", files: map[string]string{"var/GeoLite2-Country.mmdb": "x"}, want: "var/GeoLite2-Country.mmdb"},
		{name: "geolite wins over geoip2", files: map[string]string{"var/GeoLite2-Country.mmdb": "x", "var/GeoIP2-Country.mmdb": "y"}, want: "var/GeoLite2-Country.mmdb"},
		{name: "geoip2 when no geolite", files: map[string]string{"var/GeoIP2-Country.mmdb": "y"}, want: "var/GeoIP2-Country.mmdb"},
		{name: "var wins over usr", files: map[string]string{"var/GeoIP2-Country.mmdb": "y", "usr/GeoLite2-Country.mmdb": "x"}, want: "var/GeoIP2-Country.mmdb"},
		{name: "usr only", files: map[string]string{"usr/GeoIP2-Country.mmdb": "y"}, want: "usr/GeoIP2-Country.mmdb"},
		{name: "empty file skipped", files: map[string]string{"var/GeoLite2-Country.mmdb": "", "usr/GeoLite2-Country.mmdb": "x"},
			want: "usr/GeoLite2-Country.mmdb", wantSkipped: []string{"var/GeoLite2-Country.mmdb: empty file"}},
		{name: "directory skipped", files: map[string]string{"var/GeoLite2-Country.mmdb/": "", "var/GeoIP2-Country.mmdb": "y"},
			want: "var/GeoIP2-Country.mmdb", wantSkipped: []string{"var/GeoLite2-Country.mmdb: not a regular file"}},
		{name: "only an empty file", files: map[string]string{"usr/GeoIP2-Country.mmdb": ""},
			wantSkipped: []string{"usr/GeoIP2-Country.mmdb: empty file"}},
		{name: "unreadable skipped", files: map[string]string{"var/GeoLite2-Country.mmdb": "x", "usr/GeoLite2-Country.mmdb": "x"},
			unreadable: []string{"var/GeoLite2-Country.mmdb"},
			want:       "usr/GeoLite2-Country.mmdb", wantSkipped: []string{"var/GeoLite2-Country.mmdb: "}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range []string{"var", "usr"} {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, content := range c.files {
				p := filepath.Join(root, name)
				if strings.HasSuffix(name, "/") {
					if err := os.Mkdir(p, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range c.unreadable {
				if os.Geteuid() == 0 {
					// Root opens any file whatever its mode: make it
					// unopenable with a symlink loop (ELOOP) instead.
					p := filepath.Join(root, name)
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink(filepath.Base(p), p); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.Chmod(filepath.Join(root, name), 0); err != nil {
					t.Fatal(err)
				}
			}
			paths := make([]string, len(names))
			for i, n := range names {
				paths[i] = filepath.Join(root, n)
			}
			got, skipped := DiscoverMMDB(paths)
			want := ""
			if c.want != "" {
				want = filepath.Join(root, c.want)
			}
			if got != want {
				t.Errorf("DiscoverMMDB = %q, want %q", got, want)
			}
			if len(skipped) != len(c.wantSkipped) {
				t.Fatalf("skipped = %q, want %d entries like %q", skipped, len(c.wantSkipped), c.wantSkipped)
			}
			for i, w := range c.wantSkipped {
				if !strings.HasPrefix(skipped[i], filepath.Join(root, w)) {
					t.Errorf("skipped[%d] = %q, want prefix %q", i, skipped[i], filepath.Join(root, w))
				}
			}
		})
	}
}
