package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/term"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/sessionauth"
)

// adminFlags are the flags and commands of the admin API part.
type adminFlags struct {
	enableAPI       *bool
	sessionTTL      *time.Duration
	sessionCacheTTL *time.Duration
	trustedProxies  *[]string
	setPassword     *kingpin.CmdClause
}

func addAdminFlags(app *kingpin.Application) *adminFlags {
	af := &adminFlags{
		enableAPI: app.Flag("web.enable-admin-api",
			"Serve the admin API under /api/ (setup, login, logout, geo re-resolve, status, lookup). Off by default, like Prometheus' flag of the same name: without it /api/ does not exist.").
			Default("false").Bool(),
		sessionTTL: app.Flag("admin.session-ttl", "Lifetime of an admin API session.").
			Default(sessionauth.DefaultSessionTTL.String()).Duration(),
		sessionCacheTTL: app.Flag("admin.session-cache-ttl",
			"How long a validated admin session is trusted from memory without a database query; expiry is still exact, logout immediate. 0 disables the cache.").
			Default(sessionauth.DefaultSessionCacheTTL.String()).Duration(),
		trustedProxies: app.Flag("web.trusted-proxies",
			"Reverse proxy address or CIDR prefix whose X-Forwarded-For (and X-Forwarded-Proto/-Host) the admin API believes for the client address; repeatable or comma-separated.").
			Strings(),
	}
	admin := app.Command("admin", "Administer the admin API.")
	af.setPassword = admin.Command("set-password",
		"Set the admin API password in the app database (--storage.path) and end every session. Reads it from stdin, or asks twice without echo on a terminal.")
	return af
}

// runAdminCommand runs an admin subcommand (e.g. "admin set-password");
// handled is false when cmd is not one of them.
func runAdminCommand(cmd string, af *adminFlags, flags *coreFlags, logger *slog.Logger) (code int, handled bool) {
	if cmd != af.setPassword.FullCommand() {
		return 0, false
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := setPasswordCommand(ctx, *flags.storagePath, os.Stdin, os.Stderr, logger); err != nil {
		fmt.Fprintf(os.Stderr, "%s: admin set-password: %v\n", exporterName, err)
		return 1, true
	}
	return 0, true
}

// setPasswordCommand reads the new password from in and stores it.
func setPasswordCommand(ctx context.Context, storagePath string, in *os.File, prompt io.Writer, logger *slog.Logger) (err error) {
	password, err := readNewPassword(in, prompt)
	if err != nil {
		return err
	}
	if err := sessionauth.ValidatePassword(password); err != nil {
		return err
	}
	db, err := appdb.Open(ctx, storagePath)
	if err != nil {
		return fmt.Errorf("open storage (--storage.path): %w", err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close storage: %w", cerr)
		}
	}()
	revoked, err := sessionauth.SetPassword(ctx, db, password)
	if err != nil {
		return err
	}
	logger.Info("admin password set; a running exporter accepts it at the next login", "storage", storagePath, "sessions_ended", revoked)
	return nil
}

// maxPasswordInput bounds what is read from a non-terminal stdin.
const maxPasswordInput = 4096

// readNewPassword reads a password: from a terminal, asked twice without
// echo; otherwise the whole input, without its final line break.
func readNewPassword(in *os.File, prompt io.Writer) (string, error) {
	fd := int(in.Fd())
	if term.IsTerminal(fd) {
		_, _ = fmt.Fprint(prompt, "New admin password: ")
		first, err := term.ReadPassword(fd)
		_, _ = fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		_, _ = fmt.Fprint(prompt, "Repeat the password: ")
		second, err := term.ReadPassword(fd)
		_, _ = fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(first, second) {
			return "", errors.New("the passwords differ")
		}
		return string(first), nil
	}
	return readPasswordFrom(in)
}

// readPasswordFrom reads a password piped in: everything up to EOF, without
// one trailing "\n" or "\r\n".
func readPasswordFrom(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPasswordInput+1))
	if err != nil {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	if len(b) > maxPasswordInput {
		return "", fmt.Errorf("read password from stdin: more than %d bytes", maxPasswordInput)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if bytes.ContainsAny(b, "\r\n") {
		return "", errors.New("read password from stdin: the password must be one line")
	}
	return string(b), nil
}

// setupAdmin mounts the admin API under /api/ on e.mux.
func (e *exporter) setupAdmin(ctx context.Context, af *adminFlags, _ *coreFlags) error {
	if !*af.enableAPI {
		e.logger.Info("admin API disabled (enable it with --web.enable-admin-api)")
		return nil
	}
	proxies, err := sessionauth.ParseTrustedProxies(*af.trustedProxies)
	if err != nil {
		return fmt.Errorf("--web.trusted-proxies: %w", err)
	}
	// A nil *geo.Resolver must become a nil interface, not a typed nil.
	var g sessionauth.Geo
	if e.geo.resolver != nil {
		g = e.geo.resolver
	}
	svc, err := sessionauth.New(ctx, sessionauth.Options{
		DB: e.appDB,
		// The logger is passed as it is: the failed-login line must keep
		// the shape deploy/fail2ban matches.
		Logger: e.logger,
		// sessionauth validates these (and the rest of its options).
		SessionTTL:      *af.sessionTTL,
		SessionCacheTTL: *af.sessionCacheTTL,
		TrustedProxies:  proxies,
		Geo:             g,
	})
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	e.mux.Handle("/api/", svc)
	e.admin = svc
	return nil
}

func adminLandingLinks(af *adminFlags) []web.LandingLinks {
	if !*af.enableAPI {
		return nil
	}
	return []web.LandingLinks{
		{Address: sessionauth.PathSession, Text: "Admin API (JSON; log in first, see docs/admin.md)"},
	}
}
