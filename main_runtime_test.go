package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
)

func TestResolveBuildVersion(t *testing.T) {
	stamped := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123abcd"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "false"},
	}}
	dirty := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"},
		{Key: "vcs.modified", Value: "true"},
	}}
	cases := []struct {
		name     string
		linked   buildVersion
		embedded string
		info     *debug.BuildInfo
		want     buildVersion
	}{
		{"plain go build, no VCS stamp", buildVersion{Revision: "unknown"}, "0.1.0\n", &debug.BuildInfo{}, buildVersion{Version: "0.1.0", Revision: "unknown"}},
		{"no build info at all", buildVersion{}, "0.1.0", nil, buildVersion{Version: "0.1.0", Revision: "unknown"}},
		{"plain go build in a clean repository", buildVersion{Revision: "unknown"}, "0.2.0\n", stamped, buildVersion{Version: "0.2.0", Revision: "0123abcd", BuildDate: "2026-12-01T10:00:00Z"}},
		{"plain go build in a dirty repository", buildVersion{}, "0.2.0", dirty, buildVersion{Version: "0.2.0", Revision: "0123abcd-modified"}},
		{"promu build: ldflags win", buildVersion{Version: "9.9.9", Revision: "feedface", BuildDate: "20261201-10:00:00"}, "0.2.0", stamped,
			buildVersion{Version: "9.9.9", Revision: "feedface", BuildDate: "20261201-10:00:00"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := resolveBuildVersion(c.linked, c.embedded, c.info); got != c.want {
				t.Errorf("resolveBuildVersion = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestPlainBuildVersion builds the binary the way a user does (go build, no
// linker flags) and checks that --version names the VERSION file and, in a
// git checkout Go can stamp, the commit.
func TestPlainBuildVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the exporter")
	}
	want, err := os.ReadFile("VERSION")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), exporterName)
	// -buildvcs=auto overrides a GOFLAGS=-buildvcs=false of the environment.
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "version "+strings.TrimSpace(string(want))+" ") {
		t.Errorf("--version does not name VERSION %q:\n%s", strings.TrimSpace(string(want)), out)
	}
	// Go stamps the revision when the module root holds a .git directory
	// (a fresh clone, as in CI); a git worktree has a .git file, which Go
	// does not stamp from.
	if fi, err := os.Stat(".git"); err == nil && fi.IsDir() {
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v", err)
		}
		if !strings.Contains(string(out), "revision: "+strings.TrimSpace(string(head))) {
			t.Errorf("--version does not name the commit %s:\n%s", head, out)
		}
	} else {
		t.Logf("no .git directory (worktree or export): only the version is checked\n%s", out)
		if !strings.Contains(string(out), "revision: unknown") {
			t.Errorf("without a VCS stamp the revision must read unknown:\n%s", out)
		}
	}
}

// TestRuntimeEndpoints checks pprof (off by default, on with
// --web.enable-pprof, linked from the landing page only then), the go_* and
// process_* metrics, and the landing page's note on where countries come
// from.
func TestRuntimeEndpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the exporter")
	}
	bin := buildExporter(t)
	f2bDB := f2bgen.GenerateT(t, f2bgen.DefaultSpec(20, time.Now()))
	// The note depends on whether this host has a country database at a
	// standard path (the exporter then uses it).
	hostMMDB, _ := geo.DiscoverMMDB(geo.StandardMMDBPaths())
	mmdb := filepath.Join(t.TempDir(), "countries.mmdb")
	writeCountryMMDB(t, mmdb, bannedIPs(t, f2bDB), "FR")
	const note = "Countries come from ip-api.com over the network"

	cases := []struct {
		name      string
		args      []string
		pprof     bool
		wantNote  bool
		wantInLog string
	}{
		{"defaults, ip-api only", []string{"--geo.ipapi.url=http://127.0.0.1:1/batch"}, false, hostMMDB == "", "ip-api.com over the network"},
		{"pprof on", []string{"--web.enable-pprof", "--geo.providers=none"}, true, false, "country resolution disabled"},
		{"explicit mmdb", []string{"--geo.mmdb=" + mmdb, "--geo.ipapi.url=http://127.0.0.1:1/batch"}, false, false, "country resolution on"},
		{"mmdb turned off", []string{"--geo.mmdb=", "--geo.ipapi.url=http://127.0.0.1:1/batch"}, false, true, "--geo.mmdb is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--fail2ban.db", f2bDB, "--storage.path", filepath.Join(t.TempDir(), "bangui.sqlite3")}, c.args...)
			p := startExporter(t, bin, args...)
			p.waitLog(c.wantInLog, func(l string) bool { return strings.Contains(l, c.wantInLog) })

			_, landing := httpGetBody(t, p.base+"/")
			if got := strings.Contains(landing, "/debug/pprof/heap"); got != c.pprof {
				t.Errorf("landing page links pprof: %v, want %v", got, c.pprof)
			}
			if got := strings.Contains(landing, note); got != c.wantNote {
				t.Errorf("landing page has the ip-api note: %v, want %v\n%s", got, c.wantNote, landing)
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1"} {
				code, _ := httpGetBody(t, p.base+path)
				want := 404
				if c.pprof {
					want = 200
				}
				if code != want {
					t.Errorf("GET %s: %d, want %d", path, code, want)
				}
			}

			fams := scrapeFamilies(t, p.base)
			for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds", "go_info",
				"process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_cpu_seconds_total", "process_start_time_seconds"} {
				if v, ok := fams[name]; !ok || len(*v) == 0 {
					t.Errorf("/metrics has no %s", name)
				}
			}
			if rss, _ := sumOf(fams, "process_resident_memory_bytes"); rss <= 0 {
				t.Errorf("process_resident_memory_bytes = %v", rss)
			}
		})
	}
}
