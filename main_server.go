package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/exporter-toolkit/web"
)

// Limits of the HTTP server. Every request the exporter serves is small: a
// scrape or an admin API call without a body, or an admin API body of at
// most 64 KiB.
const (
	// serverReadHeaderTimeout bounds the request line and headers.
	serverReadHeaderTimeout = 10 * time.Second
	// serverReadTimeout bounds the whole request, headers and body: the
	// 10 s for the headers plus 10 s for a body of at most 64 KiB (6.5 KB/s
	// at the least). A client that trickles its body is closed then.
	serverReadTimeout = 20 * time.Second
	// serverWriteTimeout bounds the time from the end of the request
	// headers to the end of the response. The longest response is a
	// scrape: Prometheus' scrape_timeout is 10 s by default and at most the
	// scrape interval; the exporter's own worst case (a cold read of
	// fail2ban's database in chunks, each with a 3 s busy timeout, plus
	// the 5 s socket timeout) stays well inside a minute. 2 minutes leave
	// room for a scrape_timeout of up to 110 s and still close a client
	// that never reads its response.
	serverWriteTimeout = 2 * time.Minute
	// serverIdleTimeout closes a keep-alive connection without a request
	// for that long: longer than common scrape intervals (15 s to 1 m), so
	// Prometheus keeps reusing one connection.
	serverIdleTimeout = 2 * time.Minute
	// defaultMaxConnections is --web.max-connections' default, as
	// Prometheus' own: a connection costs one file descriptor and about
	// 20 KB, so the cap bounds them at 512 and ≈ 10 MB.
	defaultMaxConnections = 512
)

// refuseBodies answers a request that carries a body with 413 at once,
// unless its path is under allowPrefix. No scrape, health check or landing
// page request has a body. net/http would otherwise read the body before
// the first byte of the answer goes out, so a client trickling a body to
// /metrics would hold one of the --web.max-requests scrape slots until the
// read timeout; "Connection: close" makes it answer without reading, and
// close the connection.
func refuseBodies(next http.Handler, allowPrefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && !strings.HasPrefix(r.URL.Path, allowPrefix) {
			w.Header().Set("Connection", "close")
			http.Error(w, "this endpoint takes no request body", http.StatusRequestEntityTooLarge)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// addServerFlags registers the HTTP server's flags; it returns the
// connection cap.
func addServerFlags(app *kingpin.Application) *int {
	return app.Flag("web.max-connections",
		"Maximum number of simultaneous connections to the HTTP server, over all listen addresses; further connections wait in the kernel's backlog until one closes. 0 means no limit.").
		Default(strconv.Itoa(defaultMaxConnections)).Int()
}

// newHTTPServer is the exporter's HTTP server with its timeouts. Only the
// admin API (under apiPrefix) takes request bodies.
func newHTTPServer(handler http.Handler, apiPrefix string, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           refuseBodies(handler, apiPrefix),
		ReadHeaderTimeout: serverReadHeaderTimeout,
		ReadTimeout:       serverReadTimeout,
		WriteTimeout:      serverWriteTimeout,
		IdleTimeout:       serverIdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
	}
}

// listenAndServe is exporter-toolkit's web.ListenAndServe (listen
// addresses, vsock://, systemd socket activation; TLS and basic auth from
// --web.config.file) with at most maxConns connections open at once over
// all listeners (0: no limit).
func listenAndServe(server *http.Server, flags *web.FlagConfig, maxConns int, logger *slog.Logger) error {
	if maxConns < 0 {
		return fmt.Errorf("--web.max-connections must not be negative, got %d", maxConns)
	}
	listeners, err := openListeners(flags, logger)
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range listeners {
			_ = l.Close() // already closed by the server when it stopped
		}
	}()
	if maxConns > 0 {
		sem := make(chan struct{}, maxConns)
		for i, l := range listeners {
			listeners[i] = newLimitListener(l, sem)
		}
	}
	return web.ServeMultiple(listeners, server, flags, logger)
}

// openListeners opens the listeners web.ListenAndServe would.
func openListeners(flags *web.FlagConfig, logger *slog.Logger) ([]net.Listener, error) {
	if flags == nil || flags.WebConfigFile == nil {
		return nil, web.ErrMissingFlag
	}
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		logger.Info("Listening on systemd activated listeners instead of port listeners.")
		listeners, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("systemd socket activation: %w", err)
		}
		if len(listeners) < 1 {
			return nil, errors.New("no socket activation file descriptors found")
		}
		return listeners, nil
	}
	if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
		return nil, web.ErrNoListeners
	}
	var listeners []net.Listener
	for _, address := range *flags.WebListenAddresses {
		l, err := listen(address)
		if err != nil {
			for _, open := range listeners {
				_ = open.Close()
			}
			return nil, err
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

// listen opens a TCP listener, or a vsock one for vsock://:PORT.
func listen(address string) (net.Listener, error) {
	if !strings.HasPrefix(address, "vsock://") {
		return net.Listen("tcp", address)
	}
	u, err := url.Parse(address)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", address, err)
	}
	_, portText, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", address, err)
	}
	port, err := strconv.ParseUint(portText, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: port: %w", address, err)
	}
	return vsock.Listen(uint32(port), nil)
}

// limitListener hands out a connection only while fewer than cap(sem) are
// open; sem is shared by all listeners of the server. Like
// golang.org/x/net/netutil.LimitListener, but over several listeners, and
// a place is taken after the connection is accepted, so an idle listener
// holds none: at the cap, each listener holds at most one accepted
// connection waiting for a place, the others wait in the kernel's backlog.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(l net.Listener, sem chan struct{}) *limitListener {
	return &limitListener{Listener: l, sem: sem, done: make(chan struct{})}
}

// Accept waits for a connection, then for a free place.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.sem <- struct{}{}:
		return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
	case <-l.done:
		_ = c.Close()
		return nil, net.ErrClosed
	}
}

// Close stops Accept, also while it waits for a free place.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// limitConn gives its place back when closed.
type limitConn struct {
	net.Conn
	releaseOnce sync.Once
	release     func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(c.release)
	return err
}

// CloseWrite half-closes a TCP connection, as net/http does before closing
// one whose request it refused.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
