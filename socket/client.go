// Package socket talks to a running fail2ban-server over its unix socket and
// exposes what fail2ban knows at this moment — its own "currently banned"
// count per jail, failures, jail settings — as Prometheus metrics.
//
// # Protocol
//
// A request is a pickled Python list of strings followed by the bytes
// "<F2B_END_COMMAND>"; the reply is a pickled tuple (rc, payload) followed by
// the same terminator. rc 0 means success; rc 1 carries a pickled Python
// exception, which Client turns into a *ServerError. One connection carries
// any number of commands and is closed with "<F2B_CLOSE_COMMAND>".
//
// # Pickle library
//
// Pickles are encoded and decoded with github.com/kisielk/og-rek. We
// evaluated it against github.com/nlpodyssey/gopickle: gopickle only
// decodes (it has no pickler, so requests would need a hand-written
// encoder), calls itself alpha and targets PyTorch files, while og-rek
// encodes and decodes every protocol (0-5), is maintained, fuzzed, and safe
// on untrusted input by design: Python classes and instances become plain
// Class and Call values, nothing is ever executed or instantiated. og-rek
// does not implement the BUILD opcode; fail2ban only emits it for an
// exception object that carries extra attributes, and such a reply is still
// reported as a server error (classified from its rc) instead of a decoding
// failure.
//
// # Connection handling
//
// Client keeps one connection and reuses it for every command. Every
// command has a deadline (the timeout, or the context's deadline when that
// is sooner) covering connect, write and read. When a reused connection
// turns out to be dead — fail2ban restarted and recreated its socket — the
// command is retried once on a fresh connection; any other failure closes
// the connection and the next command reconnects.
package socket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	ogorek "github.com/kisielk/og-rek"
)

// Protocol markers of fail2ban's socket (fail2ban/protocol.py CSPROTO).
var (
	endCommand   = []byte("<F2B_END_COMMAND>")
	closeCommand = []byte("<F2B_CLOSE_COMMAND>")
)

// Defaults.
const (
	DefaultPath     = "/var/run/fail2ban/fail2ban.sock"
	DefaultTimeout  = 5 * time.Second
	DefaultMaxReply = 32 << 20
)

// ErrProtocol wraps replies that are not fail2ban's protocol: a peer that is
// not fail2ban, or a reply that cannot be decoded.
var ErrProtocol = errors.New("not a fail2ban reply")

// ServerError is an error fail2ban reported for a command (rc 1): the Python
// exception it raised.
type ServerError struct {
	// Command is the command that failed.
	Command []string
	// Type is the exception's class, qualified by its module unless it is
	// a builtin ("fail2ban.exceptions.UnknownJailException", "KeyError").
	Type string
	// Message is the exception's arguments as Python would print them.
	Message string
}

func (e *ServerError) Error() string {
	msg := e.Type
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return fmt.Sprintf("fail2ban: command %q failed: %s", strings.Join(e.Command, " "), msg)
}

// Options configure a Client.
type Options struct {
	// Path of fail2ban's socket (DefaultPath when empty).
	Path string
	// Timeout bounds connect, write and read of one command
	// (DefaultTimeout when zero).
	Timeout time.Duration
	// MaxReply is the largest reply accepted, in bytes (DefaultMaxReply
	// when zero); a larger one is a protocol error, so a garbage peer cannot
	// make us buffer without end.
	MaxReply int
}

// Client is a fail2ban socket client; safe for concurrent use (commands are
// serialized on its one connection).
type Client struct {
	path     string
	timeout  time.Duration
	maxReply int

	mu     sync.Mutex
	conn   net.Conn
	closed bool
	// dials counts successful connects, so callers can tell reconnects.
	dials uint64
}

// New returns a client for the socket at opts.Path. It does not connect
// until the first command.
func New(opts Options) *Client {
	c := &Client{path: opts.Path, timeout: opts.Timeout, maxReply: opts.MaxReply}
	if c.path == "" {
		c.path = DefaultPath
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxReply <= 0 {
		c.maxReply = DefaultMaxReply
	}
	return c
}

// Path is the socket path.
func (c *Client) Path() string { return c.path }

// Timeout is the per-command timeout.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Dials returns how many connections the client has opened so far.
func (c *Client) Dials() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Close says goodbye to fail2ban and closes the connection. Later commands
// fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.closeConnLocked(true)
}

func (c *Client) closeConnLocked(sayGoodbye bool) error {
	if c.conn == nil {
		return nil
	}
	conn := c.conn
	c.conn = nil
	if sayGoodbye {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.Write(append(append([]byte{}, closeCommand...), endCommand...))
	}
	if err := conn.Close(); err != nil {
		return fmt.Errorf("fail2ban socket %s: close: %w", c.path, err)
	}
	return nil
}

// Command sends one command and returns fail2ban's payload, decoded by
// og-rek: string, int64, bool, float64, *big.Int, ogorek.None, []any,
// ogorek.Tuple, map[any]any. An rc 1 reply is a *ServerError.
func (c *Client) Command(ctx context.Context, args ...string) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("fail2ban socket: empty command")
	}
	request, err := EncodeRequest(args)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("fail2ban socket %s: client closed", c.path)
	}
	reused := c.conn != nil
	raw, gotBytes, err := c.roundTripLocked(ctx, request)
	if err != nil && reused && !gotBytes && ctx.Err() == nil && isConnGone(err) {
		// The connection died between commands (fail2ban restarted): the
		// command never reached a server, so sending it again is safe.
		raw, _, err = c.roundTripLocked(ctx, request)
	}
	if err != nil {
		return nil, err
	}
	return DecodeReply(args, raw)
}

// roundTripLocked writes request and reads one reply. gotBytes tells
// whether any reply byte arrived. On error the connection is closed.
func (c *Client) roundTripLocked(ctx context.Context, request []byte) (reply []byte, gotBytes bool, err error) {
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if c.conn == nil {
		dialer := net.Dialer{Deadline: deadline}
		conn, err := dialer.DialContext(ctx, "unix", c.path)
		if err != nil {
			return nil, false, fmt.Errorf("fail2ban socket %s: connect: %w", c.path, err)
		}
		c.conn = conn
		c.dials++
	}
	conn := c.conn
	if err := conn.SetDeadline(deadline); err != nil {
		_ = c.closeConnLocked(false) // the deadline error is the one to report
		return nil, false, fmt.Errorf("fail2ban socket %s: set deadline: %w", c.path, err)
	}
	// A cancelled context interrupts a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(request); err != nil {
		_ = c.closeConnLocked(false) // the write error is the one to report
		return nil, false, c.ioError(ctx, "write", err)
	}
	reply, err = c.readReply(conn)
	if err != nil {
		_ = c.closeConnLocked(false) // the read error is the one to report
		return nil, len(reply) > 0, c.ioError(ctx, "read", err)
	}
	return reply, true, nil
}

func (c *Client) ioError(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("fail2ban socket %s: %s: %w (%w)", c.path, op, ctxErr, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("fail2ban socket %s: %s: no answer within %s: %w", c.path, op, c.timeout, err)
	}
	return fmt.Errorf("fail2ban socket %s: %s: %w", c.path, op, err)
}

// readReply reads until a complete pickle followed by the terminator has
// arrived. The terminator may also occur inside the pickled data (a log
// line, say), so a buffer that ends with it only counts as complete when
// the pickle before it decodes.
func (c *Client) readReply(conn net.Conn) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		n, err := conn.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if bytes.HasSuffix(buf, endCommand) && pickleComplete(buf[:len(buf)-len(endCommand)]) {
			return buf[:len(buf)-len(endCommand)], nil
		}
		if len(buf) > c.maxReply {
			return buf, fmt.Errorf("%w: reply larger than %d bytes without a terminator", ErrProtocol, c.maxReply)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if len(buf) == 0 {
					return nil, fmt.Errorf("connection closed by fail2ban: %w", err)
				}
				return buf, fmt.Errorf("%w: connection closed after %d bytes without a complete reply", ErrProtocol, len(buf))
			}
			return buf, err
		}
		if len(chunk) < 64<<10 {
			chunk = make([]byte, 2*len(chunk))
		}
	}
}

// pickleComplete reports whether data decodes as a whole pickle, or fails
// for a reason other than running out of bytes.
func pickleComplete(data []byte) bool {
	_, err := ogorek.NewDecoder(bytes.NewReader(data)).Decode()
	return !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF)
}

// isConnGone reports whether err means the peer went away (as opposed to a
// timeout or a protocol error).
func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed)
}

// EncodeRequest pickles a command as fail2ban expects it, terminator
// included. Protocol 2 with unicode strings is understood by every fail2ban
// from 0.9 (Python 2) on.
func EncodeRequest(args []string) ([]byte, error) {
	list := make([]any, len(args))
	for i, a := range args {
		list[i] = a
	}
	var buf bytes.Buffer
	enc := ogorek.NewEncoderWithConfig(&buf, &ogorek.EncoderConfig{Protocol: 2, StrictUnicode: true})
	if err := enc.Encode(list); err != nil {
		return nil, fmt.Errorf("fail2ban socket: encode command %q: %w", strings.Join(args, " "), err)
	}
	buf.Write(endCommand)
	return buf.Bytes(), nil
}

// DecodeReply decodes one reply (without its terminator) to command.
func DecodeReply(command []string, raw []byte) (any, error) {
	v, err := ogorek.NewDecoder(bytes.NewReader(raw)).Decode()
	if err != nil {
		if rc, ok := peekRC(raw); ok && rc != 0 {
			return nil, &ServerError{Command: command, Type: "exception", Message: fmt.Sprintf("rc %d; details not decodable: %v", rc, err)}
		}
		return nil, fmt.Errorf("%w: decode reply to %q: %w", ErrProtocol, strings.Join(command, " "), err)
	}
	switch v := v.(type) {
	case ogorek.Tuple:
		if len(v) != 2 {
			return nil, fmt.Errorf("%w: reply to %q is a %d-tuple, want (rc, payload)", ErrProtocol, strings.Join(command, " "), len(v))
		}
		rc, ok := v[0].(int64)
		if !ok {
			return nil, fmt.Errorf("%w: reply to %q has rc of type %T", ErrProtocol, strings.Join(command, " "), v[0])
		}
		if rc == 0 {
			return v[1], nil
		}
		return nil, exceptionError(command, rc, v[1])
	case string:
		// fail2ban answers a request it could not even unpickle with a bare
		// "ERROR: ..." string.
		if strings.HasPrefix(v, "ERROR") {
			return nil, &ServerError{Command: command, Type: "ProtocolError", Message: v}
		}
	}
	return nil, fmt.Errorf("%w: reply to %q is %s, want an (rc, payload) tuple", ErrProtocol, strings.Join(command, " "), describe(v))
}

// peekRC reads rc from the start of a protocol 2-5 pickle of (rc, payload)
// whose payload og-rek cannot decode: PROTO n, an optional FRAME, then rc as
// BININT1. This classifies the reply; it decodes nothing else.
func peekRC(raw []byte) (int, bool) {
	if len(raw) < 2 || raw[0] != 0x80 {
		return 0, false
	}
	rest := raw[2:]
	if len(rest) >= 9 && rest[0] == 0x95 { // FRAME + 8-byte length
		rest = rest[9:]
	}
	if len(rest) >= 2 && rest[0] == 'K' { // BININT1
		return int(rest[1]), true
	}
	return 0, false
}

// exceptionError turns fail2ban's pickled exception into a *ServerError.
func exceptionError(command []string, rc int64, payload any) error {
	e := &ServerError{Command: command, Type: fmt.Sprintf("error rc %d", rc)}
	call, ok := payload.(ogorek.Call)
	if !ok {
		if p, isPtr := payload.(*ogorek.Call); isPtr && p != nil {
			call, ok = *p, true
		}
	}
	if !ok {
		e.Message = describe(payload)
		return e
	}
	e.Type = call.Callable.Name
	if m := call.Callable.Module; m != "" && m != "builtins" && m != "exceptions" && m != "__builtin__" {
		e.Type = m + "." + e.Type
	}
	parts := make([]string, len(call.Args))
	for i, a := range call.Args {
		if s, isStr := a.(string); isStr {
			parts[i] = s
		} else {
			parts[i] = describe(a)
		}
	}
	e.Message = strings.Join(parts, ", ")
	return e
}

// describe renders a decoded value briefly for error messages.
func describe(v any) string {
	s := fmt.Sprintf("%#v", v)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
