package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// writeSelfSigned writes a self-signed certificate and key for name into
// dir and returns their paths.
func writeSelfSigned(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func freeListenPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// startWebServer serves /-/healthy and /-/ready (ready answers 503 unless
// ready) through exporter-toolkit's web.ListenAndServe with the given
// listen address and web config, exactly as the exporter serves them, and
// waits until it accepts connections.
func startWebServer(t *testing.T, listen, configFile string, ready bool) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "Healthy\n")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			http.Error(w, "Not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "Ready\n")
	})
	listenFlag := []string{listen}
	systemd := false
	flags := &web.FlagConfig{WebListenAddresses: &listenFlag, WebSystemdSocket: &systemd, WebConfigFile: &configFile}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	var logs testkit.LogBuffer
	done := make(chan error, 1)
	go func() { done <- web.ListenAndServe(server, flags, logs.Logger(-4)) }()
	t.Cleanup(func() {
		if err := server.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server: %v\n%s", err, logs.String())
		}
	})
	testkit.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func writeWebConfig(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHealthcheck runs the healthcheck command (through run, as the binary
// does) against servers in each configuration the exporter supports, each
// once healthy and once not.
func TestHealthcheck(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := writeSelfSigned(t, dir, "exporter.example")
	otherCert, otherKey := writeSelfSigned(t, dir, "other.example")
	const password = "s3cret pass"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := writeWebConfig(t, t.TempDir(), fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certPath, keyPath))
	// Relative paths resolve against the config file's directory.
	relDir := t.TempDir()
	for _, f := range []string{certPath, keyPath} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(relDir, filepath.Base(f)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsRelConfig := writeWebConfig(t, relDir, "tls_server_config:\n  cert_file: exporter.example.crt\n  key_file: exporter.example.key\n")
	otherTLSConfig := writeWebConfig(t, t.TempDir(), fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", otherCert, otherKey))
	authConfig := writeWebConfig(t, t.TempDir(), fmt.Sprintf("basic_auth_users:\n  admin: %s\n", hash))
	tlsAuthConfig := writeWebConfig(t, t.TempDir(), fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  admin: %s\n", certPath, keyPath, hash))
	mtlsConfig := writeWebConfig(t, t.TempDir(), fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n", certPath, keyPath, certPath))
	brokenConfig := writeWebConfig(t, t.TempDir(), "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")

	type server struct {
		config string
		ready  bool
	}
	tests := []struct {
		name string
		// server is nil when nothing listens.
		server *server
		// args of the healthcheck command; {{addr}} is the server's address.
		args []string
		env  map[string]string
		want int
	}{
		{"plain healthy", &server{"", true}, []string{"--web.listen-address={{addr}}"}, nil, 0},
		{"plain unhealthy: nothing listens", nil, []string{"--web.listen-address={{addr}}"}, nil, 1},
		{"plain ready", &server{"", true}, []string{"--web.listen-address={{addr}}", "--ready"}, nil, 0},
		{"plain not ready", &server{"", false}, []string{"--web.listen-address={{addr}}", "--ready"}, nil, 1},
		{"not ready is still healthy", &server{"", false}, []string{"--web.listen-address={{addr}}"}, nil, 0},
		{"another port, unspecified host", &server{"", true}, []string{"--web.listen-address=:{{port}}"}, nil, 0},
		{"another port, probed on the default", &server{"", true}, []string{"--web.listen-address=127.0.0.1:1"}, nil, 1},
		{"tls healthy", &server{tlsConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsConfig}, nil, 0},
		{"tls relative paths", &server{tlsRelConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsRelConfig}, nil, 0},
		{"tls unhealthy: nothing listens", nil, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsConfig}, nil, 1},
		{"tls unhealthy: plain http server", &server{"", true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsConfig}, nil, 1},
		{"tls unhealthy: another certificate", &server{otherTLSConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsConfig}, nil, 1},
		{"tls unhealthy: broken web config", &server{tlsConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + brokenConfig}, nil, 1},
		{"mtls healthy", &server{mtlsConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + mtlsConfig}, nil, 0},
		{"basic auth healthy", &server{authConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig},
			map[string]string{healthcheckUserEnv: "admin", healthcheckPasswordEnv: password}, 0},
		{"basic auth ready", &server{authConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig, "--ready"},
			map[string]string{healthcheckUserEnv: "admin", healthcheckPasswordEnv: password}, 0},
		{"basic auth unhealthy: wrong password", &server{authConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig},
			map[string]string{healthcheckUserEnv: "admin", healthcheckPasswordEnv: "wrong"}, 1},
		{"basic auth unhealthy: nothing listens", nil, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig},
			map[string]string{healthcheckUserEnv: "admin", healthcheckPasswordEnv: password}, 1},
		{"basic auth without credentials: alive", &server{authConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig}, nil, 0},
		{"basic auth without credentials: readiness unknown", &server{authConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + authConfig, "--ready"}, nil, 1},
		{"tls and basic auth healthy", &server{tlsAuthConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsAuthConfig},
			map[string]string{healthcheckUserEnv: "admin", healthcheckPasswordEnv: password}, 0},
		{"tls and basic auth unhealthy: wrong user", &server{tlsAuthConfig, true}, []string{"--web.listen-address={{addr}}", "--web.config.file=" + tlsAuthConfig},
			map[string]string{healthcheckUserEnv: "nobody", healthcheckPasswordEnv: password}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freeListenPort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if tt.server != nil {
				startWebServer(t, addr, tt.server.config, tt.server.ready)
			}
			for _, k := range []string{healthcheckUserEnv, healthcheckPasswordEnv} {
				t.Setenv(k, tt.env[k])
			}
			args := []string{"healthcheck", "--timeout=5s"}
			for _, a := range tt.args {
				a = strings.ReplaceAll(a, "{{addr}}", addr)
				args = append(args, strings.ReplaceAll(a, "{{port}}", fmt.Sprint(port)))
			}
			if got := run(args); got != tt.want {
				t.Errorf("healthcheck %v = exit %d, want %d", args, got, tt.want)
			}
		})
	}
}

// TestHealthcheckServerPID checks that the health check takes the web flags
// from the running server's command line, also below a container's init.
func TestHealthcheckServerPID(t *testing.T) {
	proc := t.TempDir()
	writeCmdline := func(pid int, argv ...string) {
		t.Helper()
		d := filepath.Join(proc, fmt.Sprint(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCmdline(1, "/sbin/docker-init", "--", "/bin/bangui_exporter", "--web.listen-address=:9999")
	writeCmdline(7, "/bin/bangui_exporter", "--log.level=debug", "--web.listen-address", "127.0.0.1:9100", "--web.config.file=/etc/web.yml")
	writeCmdline(9, "/bin/bangui_exporter", "healthcheck", "--server-pid=1")
	writeCmdline(12, "/bin/bangui_exporter", "serve", "--web.listen-address=:9200")
	writeCmdline(20, "/bin/bangui_exporter", "--fail2ban.db=/x")
	if err := os.Mkdir(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		pid, self  int
		wantListen []string
		wantConfig string
		wantErr    bool
	}{
		{"below init: lowest exporter PID", 1, 100, []string{"127.0.0.1:9100"}, "/etc/web.yml", false},
		{"given PID", 12, 100, []string{":9200"}, "", false},
		{"defaults", 20, 100, []string{defaultListenAddress}, "", false},
		{"a health check is not the server", 9, 7, []string{":9200"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := serverArgs(proc, tt.pid, tt.self)
			if err != nil {
				t.Fatal(err)
			}
			listen, config, systemd := webFlagsFromArgs(args)
			if !slices.Equal(listen, tt.wantListen) || config != tt.wantConfig || systemd {
				t.Errorf("got %v %q %v, want %v %q false", listen, config, systemd, tt.wantListen, tt.wantConfig)
			}
		})
	}
	if _, err := serverArgs(t.TempDir(), 1, 2); err == nil {
		t.Error("no exporter process: want an error")
	}
}

func TestWebFlagsFromArgs(t *testing.T) {
	tests := []struct {
		args       []string
		wantListen []string
		wantConfig string
		wantSD     bool
	}{
		{nil, []string{":9635"}, "", false},
		{[]string{"--web.listen-address=:1", "--web.listen-address", "[::1]:2"}, []string{":1", "[::1]:2"}, "", false},
		{[]string{"--web.config.file", "a.yml", "--web.config.file=b.yml"}, []string{":9635"}, "b.yml", false},
		{[]string{"--web.systemd-socket"}, []string{":9635"}, "", true},
		{[]string{"--web.systemd-socket", "--no-web.systemd-socket"}, []string{":9635"}, "", false},
	}
	for _, tt := range tests {
		listen, config, sd := webFlagsFromArgs(tt.args)
		if !slices.Equal(listen, tt.wantListen) || config != tt.wantConfig || sd != tt.wantSD {
			t.Errorf("%v: got %v %q %v", tt.args, listen, config, sd)
		}
	}
}

func TestDialAddress(t *testing.T) {
	tests := []struct{ in, want string }{
		{":9635", "127.0.0.1:9635"},
		{"0.0.0.0:1", "127.0.0.1:1"},
		{"[::]:2", "[::1]:2"},
		{"192.0.2.1:3", "192.0.2.1:3"},
		{"localhost:4", "localhost:4"},
	}
	for _, tt := range tests {
		if got, err := dialAddress(tt.in); err != nil || got != tt.want {
			t.Errorf("dialAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"vsock://:9635", "nope"} {
		if _, err := dialAddress(bad); err == nil {
			t.Errorf("dialAddress(%q): want an error", bad)
		}
	}
}
