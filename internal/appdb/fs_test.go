package appdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Environment of TestFileSystemHelper.
const (
	fsCaseEnv = "BANGUI_TEST_APPDB_FS_CASE"
	fsDirEnv  = "BANGUI_TEST_APPDB_FS_DIR"
)

// fsOutcome is what TestFileSystemHelper reports.
type fsOutcome struct {
	Err string `json:"err"`
	// Files in the mount before and after the failed Open, but for the
	// filler, by path relative to it, with their modes.
	Before map[string]string `json:"before"`
	Files  map[string]string `json:"files"`
}

// TestOpenOnReadOnlyAndFullFileSystems opens the app database on a
// read-only file system and on a full one (a tmpfs of 64 KiB, in a mount
// namespace of its own, so nothing leaks onto this machine and the mount
// goes with the namespace): the error names the storage path and the cause,
// and a failed start leaves no file behind (root ignores chmod, so only a
// real read-only mount or a real full disk tells).
func TestOpenOnReadOnlyAndFullFileSystems(t *testing.T) {
	requireMountNamespace(t)
	for _, tc := range []struct {
		name string
		// path is the storage path, relative to the mount.
		path string
		// want are the parts the error must name; the path is added.
		want []string
		// existing: a database was there before, as mode 0600.
		existing bool
	}{
		{"read-only, new file", "bangui.sqlite3", []string{"read-only file system"}, false},
		{"read-only, new directory", "state/bangui.sqlite3", []string{"create directory", "read-only file system"}, false},
		{"read-only, existing database", "bangui.sqlite3", []string{"read-only file system"}, true},
		{"full, new file", "bangui.sqlite3", []string{"database or disk is full", "no space left"}, false},
		{"full, new directory", "a/b/bangui.sqlite3", []string{"database or disk is full", "no space left"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestFileSystemHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), fsCaseEnv+"="+tc.name+"|"+tc.path, fsDirEnv+"="+dir)
			cmd.SysProcAttr = mountNamespace()
			out, err := cmd.Output()
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				t.Fatalf("helper: %v\n%s%s", err, out, ee.Stderr)
			} else if err != nil {
				t.Fatal(err)
			}
			var got fsOutcome
			line := out
			if i := strings.IndexByte(string(out), '\n'); i >= 0 {
				line = out[:i]
			}
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("helper output %q: %v", out, err)
			}
			t.Logf("error: %s", got.Err)
			if got.Err == "" {
				t.Fatal("Open succeeded")
			}
			for _, want := range append([]string{filepath.Join(dir, tc.path)}, tc.want...) {
				if !strings.Contains(got.Err, want) {
					t.Errorf("the error does not name %q: %s", want, got.Err)
				}
			}
			// A failed start leaves the file system as it found it.
			if fmt.Sprint(got.Files) != fmt.Sprint(got.Before) {
				t.Errorf("files after the failed open %v, before it %v", got.Files, got.Before)
			}
			if tc.existing != (got.Before[tc.path] == "-rw-------") {
				t.Errorf("files before the open: %v", got.Before)
			}
		})
	}
}

// mountNamespace starts a child in a mount namespace of its own: as root
// directly, otherwise inside a user namespace where the caller is root (an
// unprivileged user may mount a tmpfs there).
func mountNamespace() *syscall.SysProcAttr {
	if os.Geteuid() == 0 {
		return &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
}

// requireMountNamespace skips (or fails with BANGUI_CI=1) unless this
// process may create a mount namespace and mount in it.
func requireMountNamespace(t *testing.T) {
	t.Helper()
	// Private first: nothing mounted in the namespace propagates out.
	cmd := exec.Command("/bin/sh", "-c", `mount --make-rprivate / && mount -t tmpfs tmpfs "$1"`, "sh", t.TempDir())
	cmd.SysProcAttr = mountNamespace()
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("cannot mount a tmpfs in a private mount namespace (as root, or in an unprivileged user namespace): %v %s", err, out)
	if os.Getenv("BANGUI_CI") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestFileSystemHelper runs, in a mount namespace of its own, one case of
// TestOpenOnReadOnlyAndFullFileSystems and prints its fsOutcome.
func TestFileSystemHelper(t *testing.T) {
	spec, dir := os.Getenv(fsCaseEnv), os.Getenv(fsDirEnv)
	if spec == "" {
		t.Skip("run by TestOpenOnReadOnlyAndFullFileSystems")
	}
	name, rel, _ := strings.Cut(spec, "|")
	// Nothing mounted here propagates back to the machine.
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, rel)
	ctx := context.Background()
	switch {
	case strings.HasPrefix(name, "read-only"):
		if strings.Contains(name, "existing") {
			db, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Migrate(ctx, "test", []Migration{{1, "CREATE TABLE t(x)"}}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
	case strings.HasPrefix(name, "full"):
		fill, err := os.Create(filepath.Join(dir, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		block := make([]byte, 4096)
		for {
			if _, err := fill.Write(block); err != nil {
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
		if err := fill.Close(); err != nil {
			t.Fatal(err)
		}
	}
	files := func() map[string]string {
		m := map[string]string{}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == dir || d.Name() == "filler" {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			m[rel] = info.Mode().String()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	out := fsOutcome{Before: files()}
	if db, err := Open(ctx, path); err != nil {
		out.Err = err.Error()
	} else {
		_ = db.Close()
	}
	out.Files = files()
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.Write(append(b, '\n'))
}
