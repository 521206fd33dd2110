package debian

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// container is a Debian rootfs booted with systemd-nspawn (systemd as its
// PID 1), sharing the host's network. Commands run inside with nsenter.
type container struct {
	t      *testing.T
	root   string
	nspawn *exec.Cmd
	exited chan struct{}
	log    string
	pid1   int
}

// bootContainer boots root with the recipe that works on these machines
// (--register=no --keep-unit --console=pipe; machinectl does not) and waits
// until its systemd finished booting. Stopped by t.Cleanup.
func bootContainer(t *testing.T, root string) *container {
	t.Helper()
	c := &container{t: t, root: root, exited: make(chan struct{}), log: filepath.Join(filepath.Dir(root), "nspawn.log")}
	logFile, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	name := fmt.Sprintf("bangui-test-%d", os.Getpid())
	c.nspawn = exec.Command("systemd-nspawn", "-D", root, "-b", "--machine="+name, "--register=no", "--keep-unit", "--console=pipe")
	c.nspawn.Stdin = nil
	c.nspawn.Stdout, c.nspawn.Stderr = logFile, logFile
	// If the test process dies, nspawn shuts the container down (SIGTERM).
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.nspawn.Wait(); close(c.exited) }()
	t.Cleanup(c.stop)

	testkit.Eventually(t, 60*time.Second, func() error {
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited during boot:\n%s", c.logTail())
		default:
		}
		pid, err := childPID(c.nspawn.Process.Pid)
		if err != nil {
			return err
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
			return fmt.Errorf("pid %d is not systemd yet (%q): %w", pid, comm, err)
		}
		c.pid1 = pid
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The system bus comes up a moment after PID 1; until then systemctl
	// fails to connect.
	var state string
	testkit.Eventually(t, 3*time.Minute, func() error {
		out, _ := c.run(ctx, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(out)
		if state != "running" && state != "degraded" {
			return fmt.Errorf("the container's systemd is %q", state)
		}
		return nil
	})
	if state == "degraded" {
		failed, _ := c.run(ctx, "systemctl", "--failed", "--no-legend", "--plain")
		t.Logf("container booted degraded; failed units:\n%s", failed)
	}
	t.Logf("container booted in %s (PID 1 = host pid %d)", time.Since(start).Round(100*time.Millisecond), c.pid1)
	return c
}

// childPID is the first child of pid (nspawn's child is the container's
// PID 1).
func childPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("systemd-nspawn (pid %d) has no child yet", pid)
	}
	return strconv.Atoi(f[0])
}

func (c *container) logTail() string {
	data, _ := os.ReadFile(c.log)
	return tail(string(data), 60)
}

// run runs a command inside the container (all its namespaces) and returns
// its combined output.
func (c *container) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid1), "-a", "--", name}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "TERM=dumb"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// must runs a command inside the container and fails the test on error.
func (c *container) must(name string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 3*time.Minute)
	defer cancel()
	out, err := c.run(ctx, name, args...)
	if err != nil {
		c.t.Fatalf("in the container: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// path is a path inside the container as seen from the host.
func (c *container) path(p string) string { return filepath.Join(c.root, p) }

// writeFile writes a file into the container's file system.
func (c *container) writeFile(p, content string, mode os.FileMode) {
	c.t.Helper()
	full := c.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), mode); err != nil {
		c.t.Fatal(err)
	}
}

// stop shuts the container down cleanly (SIGTERM to nspawn: systemd's
// shutdown), killing it after a minute. A container whose nspawn died
// keeps running in its own PID namespace: its PID 1 is killed then.
func (c *container) stop() {
	defer c.killOrphan()
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		c.t.Errorf("the container did not shut down within 60 s; killed:\n%s", c.logTail())
		_ = c.nspawn.Process.Kill()
		<-c.exited
	}
}

// killOrphan kills the container's PID 1 (and so its whole PID namespace)
// if it outlived nspawn.
func (c *container) killOrphan() {
	if c.pid1 == 0 {
		return
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", c.pid1))
	if err != nil || strings.TrimSuffix(root, " (deleted)") != c.root {
		return // gone, or the pid was reused by another process
	}
	c.t.Logf("the container's PID 1 (%d) outlived systemd-nspawn: killing it", c.pid1)
	_ = syscall.Kill(c.pid1, syscall.SIGKILL)
}
