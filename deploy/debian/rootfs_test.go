package debian

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The rootfs the real-host test boots: Debian bookworm, minbase, with
// systemd as PID 1 and Debian's fail2ban. Changing any of these changes the
// cache key, so a new rootfs is built.
const (
	rootfsSuite   = "bookworm"
	rootfsVariant = "minbase"
	// rootfsFormat is bumped when the way the rootfs is built changes.
	rootfsFormat = "1"
)

var rootfsInclude = []string{"systemd", "systemd-sysv", "dbus", "fail2ban", "sqlite3"}

// rootfsCacheDir is where built rootfs trees are kept between runs: outside
// the clone (CI runs in a fresh clone), overridable with
// BANGUI_ROOTFS_CACHE.
func rootfsCacheDir() string {
	if d := os.Getenv("BANGUI_ROOTFS_CACHE"); d != "" {
		return d
	}
	return "/var/cache/bangui_exporter-test"
}

// rootfsKey hashes every input of the rootfs build.
func rootfsKey(t *testing.T) string {
	t.Helper()
	arch := strings.TrimSpace(mustOutput(t, "dpkg", "--print-architecture"))
	dbs := strings.TrimSpace(mustOutput(t, "dpkg-query", "-W", "-f=${Version}", "debootstrap"))
	h := sha256.New()
	fmt.Fprintf(h, "format=%s\nsuite=%s\nvariant=%s\ninclude=%s\narch=%s\ndebootstrap=%s\n",
		rootfsFormat, rootfsSuite, rootfsVariant, strings.Join(rootfsInclude, ","), arch, dbs)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// hostMirror is the first Debian mirror of the host's apt sources (deb822
// .sources files, then one-line .list files) that serves the rootfs suite;
// BANGUI_DEBIAN_MIRROR overrides it. Read at run time, never stored.
func hostMirror(t *testing.T) string {
	t.Helper()
	if m := os.Getenv("BANGUI_DEBIAN_MIRROR"); m != "" {
		return m
	}
	var files []string
	deb822, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, deb822...)
	files = append(files, "/etc/apt/sources.list")
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(files, lists...)
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	t.Fatalf("no Debian mirror serving %s in the host's apt sources (set BANGUI_DEBIAN_MIRROR)", rootfsSuite)
	return ""
}

// mirrorIn returns the first URI in an apt sources file (either format)
// whose suites include rootfsSuite itself.
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	var uris, suites []string
	types := ""
	flush := func() string {
		defer func() { uris, suites, types = nil, nil, "" }()
		if len(uris) == 0 || !strings.Contains(" "+types+" ", " deb ") {
			return ""
		}
		if slices.Contains(suites, rootfsSuite) {
			return uris[0]
		}
		return ""
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case line == "":
			if m := flush(); m != "" {
				return m
			}
		case strings.HasPrefix(line, "deb ") && strings.HasSuffix(path, ".list"):
			fields := strings.Fields(line)
			if len(fields) > 1 && strings.HasPrefix(fields[1], "[") {
				for len(fields) > 1 && !strings.HasSuffix(fields[1], "]") {
					fields = append(fields[:1], fields[2:]...)
				}
				fields = append(fields[:1], fields[2:]...)
			}
			if len(fields) >= 3 && fields[2] == rootfsSuite {
				return fields[1]
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "Types":
				types = strings.TrimSpace(v)
			case "URIs":
				uris = strings.Fields(v)
			case "Suites":
				suites = strings.Fields(v)
			}
		}
	}
	return flush()
}

// cachedRootfs returns the path of the cached rootfs, building it with
// debootstrap first when missing (under a lock, so parallel runs build it
// once). The cached tree is never booted: each run boots a copy.
func cachedRootfs(t *testing.T) string {
	t.Helper()
	dir := rootfsCacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs-"+rootfsKey(t))
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock %s: %v", lock.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(filepath.Join(root, "usr", "bin", "fail2ban-client")); err == nil {
		t.Logf("rootfs cache hit: %s", root)
		return root
	}
	mirror := hostMirror(t)
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	// The rootfs' own / : MkdirTemp's 0700 would keep every non-root
	// service (dbus-daemon as messagebus) out of the whole tree.
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant="+rootfsVariant, "--include="+strings.Join(rootfsInclude, ","),
		rootfsSuite, tmp, mirror)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap from %s: %v\n%s", mirror, err, tail(string(out), 40))
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("rootfs built with debootstrap in %s (cached at %s)", time.Since(start).Round(time.Second), root)
	return root
}

// copyRootfs copies the cached rootfs for one run, next to the cache (same
// file system: reflinks where supported).
func copyRootfs(t *testing.T, cached string) string {
	t.Helper()
	run, err := os.MkdirTemp(filepath.Dir(cached), "run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(run); err != nil {
			t.Errorf("remove %s: %v", run, err)
		}
	})
	root := filepath.Join(run, "rootfs")
	start := time.Now()
	if out, err := exec.CommandContext(t.Context(), "cp", "-a", "--reflink=auto", cached, root).CombinedOutput(); err != nil {
		t.Fatalf("copy the rootfs: %v\n%s", err, out)
	}
	if err := os.Chmod(root, 0o755); err != nil { // the container's /
		t.Fatal(err)
	}
	t.Logf("rootfs copied in %s", time.Since(start).Round(100*time.Millisecond))
	return root
}

func mustOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestMirrorIn(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, file, content, want string
	}{
		{"deb822", "a.sources", "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n", "http://mirror.test/debian"},
		{"deb822 security first", "b.sources", "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\nTypes: deb deb-src\nURIs: http://m2.test/debian\nSuites: bookworm\n", "http://m2.test/debian"},
		{"deb822 source only", "c.sources", "Types: deb-src\nURIs: http://m3.test/debian\nSuites: bookworm\n", ""},
		{"one-line", "d.list", "# comment\ndeb http://m4.test/debian-security bookworm-security main\ndeb [arch=amd64 signed-by=/x.gpg] http://m4.test/debian bookworm main\n", "http://m4.test/debian"},
		{"other suite", "e.list", "deb http://m5.test/debian trixie main\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.file)
			if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := mirrorIn(p); got != c.want {
				t.Errorf("mirrorIn = %q, want %q", got, c.want)
			}
		})
	}
}
