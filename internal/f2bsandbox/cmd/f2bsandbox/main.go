// Command f2bsandbox runs a real, sandboxed fail2ban-server with sample bans
// of public IP addresses, for the quick-start demo (scripts/demo.sh).
//
// It prints the paths the exporter needs as "db=PATH" and "socket=PATH",
// then "ready", on standard output; logs go to standard error. It keeps
// fail2ban running until SIGINT or SIGTERM, then stops it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("f2bsandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".demo/fail2ban", "sandbox directory (created when missing; bans persist across runs)")
	socket := fs.String("socket", "", "fail2ban socket path (default DIR/f2b.sock, or a short temporary path when that is too long)")
	sampleBans := fs.Int("sample-bans", 60, "number of distinct public IPs to ban at start (spread over the jails)")
	banEvery := fs.Duration("ban-every", 0, "ban one more sample IP this often while running (0: never)")
	purgeAge := fs.String("dbpurgeage", "1d", "fail2ban's dbpurgeage")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *sampleBans < 0 {
		_, _ = fmt.Fprintln(stderr, "f2bsandbox: -sample-bans must not be negative")
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, logger, stdout, *dir, *socket, *purgeAge, *sampleBans, *banEvery); err != nil {
		logger.Error("f2bsandbox failed", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, logger *slog.Logger, stdout io.Writer, dir, socket, purgeAge string, sampleBans int, banEvery time.Duration) error {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve -dir: %w", err)
	}
	if socket == "" && len(filepath.Join(absDir, "f2b.sock")) > 100 {
		short, err := os.MkdirTemp("", "f2b")
		if err != nil {
			return fmt.Errorf("short socket directory: %w", err)
		}
		defer func() {
			if err := os.RemoveAll(short); err != nil {
				logger.Warn("remove socket directory", "dir", short, "err", err)
			}
		}()
		socket = filepath.Join(short, "f2b.sock")
	}
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sb, err := f2bsandbox.Start(startCtx, f2bsandbox.Options{Dir: absDir, Socket: socket, DBPurgeAge: purgeAge})
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sb.Stop(stopCtx); err != nil {
			logger.Error("stop fail2ban", "err", err)
		} else {
			logger.Info("fail2ban stopped")
		}
	}()
	logger.Info("fail2ban sandbox running", "dir", sb.Dir(), "config", sb.ConfigDir(), "log", sb.ServerLog())

	ips := f2bsandbox.SampleIPs(sampleBans + 10000)
	if err := banSamples(startCtx, sb, ips[:sampleBans]); err != nil {
		return err
	}
	for _, jail := range sb.Jails() {
		n, err := sb.CurrentlyBanned(startCtx, jail)
		if err != nil {
			return err
		}
		logger.Info("currently banned", "jail", jail, "ips", n)
	}
	if _, err := fmt.Fprintf(stdout, "db=%s\nsocket=%s\nready\n", sb.DBPath(), sb.Socket()); err != nil {
		return fmt.Errorf("write paths: %w", err)
	}

	var tick <-chan time.Time
	if banEvery > 0 {
		t := time.NewTicker(banEvery)
		defer t.Stop()
		tick = t.C
	}
	next := sampleBans
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping fail2ban")
			return nil
		case <-tick:
			if next >= len(ips) {
				continue
			}
			banCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := sb.Fail(banCtx, "sshd", ips[next])
			cancel()
			if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
				logger.Warn("periodic ban", "ip", ips[next], "err", err)
			}
			next++
		}
	}
}

// banSamples spreads ips over the jails: most are banned by fail2ban itself
// from log lines (sshd, incr), a tenth permanently by "banip" (perm).
func banSamples(ctx context.Context, sb *f2bsandbox.Sandbox, ips []string) error {
	perm := len(ips) / 10
	incr := len(ips) / 5
	groups := []struct {
		jail string
		ban  func(context.Context, string, ...string) error
		ips  []string
	}{
		{"perm", sb.BanIP, ips[:perm]},
		{"incr", sb.Fail, ips[perm : perm+incr]},
		{"sshd", sb.Fail, ips[perm+incr:]},
	}
	for _, g := range groups {
		if err := g.ban(ctx, g.jail, g.ips...); err != nil {
			return fmt.Errorf("sample bans in %s: %w", g.jail, err)
		}
	}
	return nil
}
