package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// defaultListenAddress is the exporter's --web.listen-address default; the
// health check assumes it when the server's command line does not set one.
const defaultListenAddress = ":9635"

// Environment variables with the credentials the health check sends when the
// web config (--web.config.file) has basic_auth_users.
const (
	healthcheckUserEnv     = "BANGUI_HEALTHCHECK_USER"
	healthcheckPasswordEnv = "BANGUI_HEALTHCHECK_PASSWORD"
)

// healthcheckFlags are the flags of the healthcheck command. The listen
// address and web config are the server's own flags (--web.listen-address,
// --web.config.file), or the running server's when --server-pid is given.
type healthcheckFlags struct {
	cmd       *kingpin.CmdClause
	ready     *bool
	timeout   *time.Duration
	serverPID *int
	user      *string
	password  *string
}

func addHealthcheckCommand(app *kingpin.Application) *healthcheckFlags {
	cmd := app.Command("healthcheck",
		"Probe a running exporter's /-/healthy (or /-/ready) over the same listen address, TLS and basic auth as the server (--web.listen-address, --web.config.file); exit 0 when it answers 200, 1 otherwise. For a container's HEALTHCHECK: no wget, no fixed URL.")
	return &healthcheckFlags{
		cmd:   cmd,
		ready: cmd.Flag("ready", "Probe /-/ready (fail2ban's database read at least once) instead of /-/healthy.").Bool(),
		timeout: cmd.Flag("timeout", "Timeout of the whole probe.").
			Default("5s").Duration(),
		serverPID: cmd.Flag("server-pid",
			"Take --web.listen-address and --web.config.file from the command line of this running exporter process (/proc/PID/cmdline) instead of this command's flags; in a container the exporter is PID 1 (with --init, the exporter process below it is found). 0: use this command's flags.").
			Default("0").Int(),
		user: cmd.Flag("user", "Basic auth user, when the web config has basic_auth_users.").
			Envar(healthcheckUserEnv).Default("").String(),
		password: cmd.Flag("password", "Basic auth password; prefer the environment variable to keep it out of the process list.").
			Envar(healthcheckPasswordEnv).Default("").String(),
	}
}

// runHealthcheck runs the healthcheck command and returns the exit code.
func runHealthcheck(hc *healthcheckFlags, toolkit *web.FlagConfig, stdout, stderr io.Writer) int {
	target := probeTarget{
		listen:     *toolkit.WebListenAddresses,
		configFile: *toolkit.WebConfigFile,
		systemd:    toolkit.WebSystemdSocket != nil && *toolkit.WebSystemdSocket,
		ready:      *hc.ready,
		user:       *hc.user,
		password:   *hc.password,
	}
	if *hc.serverPID != 0 {
		args, err := serverArgs("/proc", *hc.serverPID, os.Getpid())
		if err != nil {
			fmt.Fprintf(stderr, "unhealthy: %v\n", err)
			return 1
		}
		target.listen, target.configFile, target.systemd = webFlagsFromArgs(args)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *hc.timeout)
	defer cancel()
	msg, err := probe(ctx, target)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, msg)
	return 0
}

// probeTarget is what the health check probes and how.
type probeTarget struct {
	listen     []string
	configFile string
	systemd    bool
	ready      bool
	user       string
	password   string
}

// probe sends one GET to the server's /-/healthy or /-/ready and returns a
// one-line description of a healthy answer, or why it is not healthy.
func probe(ctx context.Context, t probeTarget) (string, error) {
	if t.systemd {
		return "", errors.New("the server uses systemd socket activation (--web.systemd-socket): its address is systemd's, probe the socket unit's address with --web.listen-address")
	}
	if len(t.listen) == 0 {
		return "", errors.New("no --web.listen-address")
	}
	host, err := dialAddress(t.listen[0])
	if err != nil {
		return "", err
	}
	cfg, err := loadWebConfig(t.configFile)
	if err != nil {
		return "", err
	}
	transport := &http.Transport{DisableKeepAlives: true}
	scheme := "http"
	if cfg.TLSConfig.IsEnabled() {
		scheme = "https"
		tlsCfg, err := healthcheckTLS(&cfg.TLSConfig)
		if err != nil {
			return "", err
		}
		transport.TLSClientConfig = tlsCfg
	}
	path := "/-/healthy"
	if t.ready {
		path = "/-/ready"
	}
	u := scheme + "://" + host + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("request %s: %w", u, err)
	}
	authConfigured := len(cfg.Users) > 0
	if authConfigured && t.user != "" {
		req.SetBasicAuth(t.user, t.password)
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // only for the message
	_ = resp.Body.Close()                                 // nothing to lose on close of a read body
	switch {
	case resp.StatusCode == http.StatusOK:
		return fmt.Sprintf("healthy: GET %s: %s", u, resp.Status), nil
	case resp.StatusCode == http.StatusUnauthorized && authConfigured && t.user == "" && !t.ready:
		// The exporter's HTTP stack answered behind its basic auth: the
		// process is alive, which is all /-/healthy tells anyway.
		return fmt.Sprintf("healthy: GET %s: %s (the server answers behind basic auth; set %s and %s to pass it)", u, resp.Status, healthcheckUserEnv, healthcheckPasswordEnv), nil
	case resp.StatusCode == http.StatusUnauthorized && authConfigured && t.user == "":
		return "", fmt.Errorf("GET %s: %s: the web config has basic_auth_users; set %s and %s", u, resp.Status, healthcheckUserEnv, healthcheckPasswordEnv)
	default:
		return "", fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
}

// dialAddress turns a listen address into the host:port to connect to: an
// unspecified host (":9635", "0.0.0.0:9635", "[::]:9635") becomes loopback.
func dialAddress(listen string) (string, error) {
	if strings.Contains(listen, "://") {
		return "", fmt.Errorf("--web.listen-address=%s: only host:port addresses can be probed", listen)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--web.listen-address=%s: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// loadWebConfig reads the web config as the server does: validated by
// exporter-toolkit (web.Validate), decoded strictly into its web.Config
// with its defaults, relative paths resolved against the file's directory.
// An empty path is no TLS and no authentication.
func loadWebConfig(path string) (*web.Config, error) {
	cfg := &web.Config{}
	if path == "" {
		return cfg, nil
	}
	if err := web.Validate(path); err != nil {
		return nil, fmt.Errorf("--web.config.file=%s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--web.config.file: %w", err)
	}
	cfg.TLSConfig = web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("--web.config.file=%s: %w", path, err)
	}
	cfg.TLSConfig.SetDirectory(filepath.Dir(path))
	return cfg, nil
}

// healthcheckTLS is the client side of the server's TLS config. The probe
// connects to loopback, where the certificate's names rarely match, so
// instead of a CA and a name it pins the server's own certificate (read
// from the same config, reloaded by the server on every handshake). When
// the server requires client certificates, the probe presents the server's
// certificate, which passes when client_ca signed it.
func healthcheckTLS(c *web.TLSConfig) (*tls.Config, error) {
	certPEM := []byte(c.TLSCert)
	if c.TLSCertPath != "" {
		var err error
		if certPEM, err = os.ReadFile(c.TLSCertPath); err != nil {
			return nil, fmt.Errorf("web config cert_file: %w", err)
		}
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, errors.New("web config: no PEM certificate in cert/cert_file")
	}
	want := block.Bytes
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below against the pinned certificate instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return errors.New("the server's certificate is not the one in the web config")
			}
			return nil
		},
	}
	if c.ClientAuth != "" && c.ClientAuth != "NoClientCert" {
		keyPEM := []byte(c.TLSKey)
		if c.TLSKeyPath != "" {
			var err error
			if keyPEM, err = os.ReadFile(c.TLSKeyPath); err != nil {
				return nil, fmt.Errorf("web config key_file: %w", err)
			}
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("web config: client certificate from the server's key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// serverArgs returns the arguments (without argv[0]) of the exporter
// process pid as /proc shows them. When pid is not the exporter (a
// container's init, docker run --init), the exporter process with the
// lowest PID other than self is used.
func serverArgs(procDir string, pid, self int) ([]string, error) {
	if args, ok := exporterCmdline(procDir, pid); ok {
		return args, nil
	}
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("find the exporter process: %w", err)
	}
	var pids []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != self && n != pid {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	for _, n := range pids {
		if args, ok := exporterCmdline(procDir, n); ok {
			return args, nil
		}
	}
	return nil, fmt.Errorf("no %s server process found (PID %d is not one)", exporterName, pid)
}

// otherCommands are the exporter's commands that are not the server.
var otherCommands = []string{"healthcheck", "admin"}

// exporterCmdline returns a process's arguments when it is the exporter's
// server: argv[0] named like this program, not one of its other commands
// (an argument naming one of them, in any position, rules it out: a flag
// value of that name is not worth the parsing).
func exporterCmdline(procDir string, pid int) ([]string, bool) {
	data, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "cmdline"))
	if err != nil || len(data) == 0 {
		return nil, false
	}
	argv := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	if filepath.Base(argv[0]) != exporterName {
		return nil, false
	}
	for _, a := range argv[1:] {
		if slices.Contains(otherCommands, a) {
			return nil, false
		}
	}
	return argv[1:], true
}

// webFlagsFromArgs picks the toolkit's flags out of a server's arguments,
// in both of kingpin's forms (--flag=value and --flag value); the last one
// wins except for the repeatable --web.listen-address. Without one, the
// server's default applies.
func webFlagsFromArgs(args []string) (listen []string, configFile string, systemd bool) {
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		takeValue := func() (string, bool) {
			if hasValue {
				return value, true
			}
			if i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		switch name {
		case "--web.listen-address":
			if v, ok := takeValue(); ok {
				listen = append(listen, v)
			}
		case "--web.config.file":
			if v, ok := takeValue(); ok {
				configFile = v
			}
		case "--web.systemd-socket":
			systemd = !hasValue || value == "true"
		case "--no-web.systemd-socket":
			systemd = false
		}
	}
	if len(listen) == 0 {
		listen = []string{defaultListenAddress}
	}
	return listen, configFile, systemd
}
