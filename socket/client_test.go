package socket

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ogorek "github.com/kisielk/og-rek"
	"go.uber.org/goleak"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Replies as CPython's pickle module writes them (fail2ban uses
// HIGHEST_PROTOCOL, 5 on Debian 12; protocol 0 and 2 for older Pythons).
var pythonReplies = map[string]string{
	"pong_p5":        "8005950c000000000000004b008c04706f6e679486942e",
	"status_p5":      "80059533000000000000004b005d94288c0e4e756d626572206f66206a61696c944b0286948c094a61696c206c697374948c04612c20629486946586942e",
	"none_p5":        "80059506000000000000004b004e86942e",
	"unknownjail_p5": "80059541000000000000004b018c136661696c3262616e2e657863657074696f6e73948c14556e6b6e6f776e4a61696c457863657074696f6e9493948c066e6f6a61696c948594529486942e",
	"keyerror_p2":    "80024b0163657863657074696f6e730a4b65794572726f720a710058010000007871018571025271038671042e",
	"pong_p0":        "2849300a56706f6e670a70300a7470310a2e",
	"error_str":      "80059516000000000000008c124552524f523a206c6f6164206661696c6564942e",
	"triple":         "80059509000000000000004b004b014b0287942e",
	"rc_string":      "8005950b000000000000008c0130948c01789486942e",
	// ValueError('boom') with an attribute: pickled with BUILD.
	"build_p5": "80059538000000000000004b018c086275696c74696e73948c0a56616c75654572726f729493948c04626f6f6d94859452947d948c056578747261944b01736286942e",
}

func TestDecodeReply(t *testing.T) {
	cmd := []string{"test"}
	tests := []struct {
		name      string
		reply     string
		want      any
		wantType  string // ServerError.Type
		wantMsg   string // ServerError.Message contains
		wantProto bool
	}{
		{name: "pong protocol 5", reply: "pong_p5", want: "pong"},
		{name: "pong protocol 0", reply: "pong_p0", want: "pong"},
		{name: "None", reply: "none_p5", want: ogorek.None{}},
		{name: "unknown jail", reply: "unknownjail_p5", wantType: "fail2ban.exceptions.UnknownJailException", wantMsg: "nojail"},
		{name: "builtin exception protocol 2", reply: "keyerror_p2", wantType: "KeyError", wantMsg: "x"},
		{name: "exception with state (BUILD)", reply: "build_p5", wantType: "exception", wantMsg: "rc 1"},
		{name: "bare error string", reply: "error_str", wantType: "ProtocolError", wantMsg: "ERROR: load failed"},
		{name: "3-tuple", reply: "triple", wantProto: true},
		{name: "rc not an int", reply: "rc_string", wantProto: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeReply(cmd, mustHex(t, pythonReplies[tt.reply]))
			switch {
			case tt.wantProto:
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
			case tt.wantType != "":
				var se *ServerError
				if !errors.As(err, &se) {
					t.Fatalf("err = %v (%T), want *ServerError", err, err)
				}
				if se.Type != tt.wantType || !strings.Contains(se.Message, tt.wantMsg) {
					t.Fatalf("ServerError{%q, %q}, want type %q message containing %q", se.Type, se.Message, tt.wantType, tt.wantMsg)
				}
				if !strings.Contains(se.Error(), `"test"`) {
					t.Errorf("error %q does not name the command", se.Error())
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Fatalf("got %#v, want %#v", got, tt.want)
				}
			}
		})
	}
	t.Run("status pairs", func(t *testing.T) {
		got, err := DecodeReply(cmd, mustHex(t, pythonReplies["status_p5"]))
		if err != nil {
			t.Fatal(err)
		}
		pairs, err := statusPairs(got)
		if err != nil {
			t.Fatal(err)
		}
		if pairs["Jail list"] != "a, b" || pairs["Number of jail"] != int64(2) {
			t.Fatalf("pairs %#v", pairs)
		}
	})
	for _, garbage := range []string{"", "hello", "\x80\x05\x95", "\xff\xff\xff", "(lp0\n"} {
		if _, err := DecodeReply(cmd, []byte(garbage)); !errors.Is(err, ErrProtocol) {
			t.Errorf("DecodeReply(%q) err = %v, want ErrProtocol", garbage, err)
		}
	}
}

// TestEncodeRequestPython checks that CPython's pickle (the one fail2ban
// runs on) reads our requests as a list of str.
func TestEncodeRequestPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv(f2bsandbox.CIEnv) == "1" {
			t.Fatalf("python3 (fail2ban's interpreter) not installed but %s=1", f2bsandbox.CIEnv)
		}
		t.Skip("python3 (fail2ban's interpreter) not installed")
	}
	args := []string{"status", "sshd", "short", "ünïcödé", "<F2B_END_COMMAND>x"}
	req, err := EncodeRequest(args)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(req, endCommand) {
		t.Fatalf("request does not end with the terminator")
	}
	cmd := exec.Command(python, "-c", `import pickle,sys; v=pickle.loads(sys.stdin.buffer.read()); assert isinstance(v, list) and all(type(x) is str for x in v), v; print("\x00".join(v), end="")`)
	cmd.Stdin = bytes.NewReader(req[:len(req)-len(endCommand)])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v: %s", err, out)
	}
	if got := strings.Split(string(out), "\x00"); strings.Join(got, "|") != strings.Join(args, "|") {
		t.Fatalf("python read %q, want %q", got, args)
	}
}

func TestPeekRC(t *testing.T) {
	tests := []struct {
		hex    string
		rc     int
		wantOK bool
	}{
		{pythonReplies["build_p5"], 1, true},
		{pythonReplies["pong_p5"], 0, true},
		{"80024b01", 1, true},
		{pythonReplies["pong_p0"], 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		rc, ok := peekRC(mustHex(t, tt.hex))
		if rc != tt.rc || ok != tt.wantOK {
			t.Errorf("peekRC(%s) = %d, %v; want %d, %v", tt.hex, rc, ok, tt.rc, tt.wantOK)
		}
	}
}

// fakePeer is a unix socket that is NOT fail2ban: it answers every
// connection with handle.
func fakePeer(t *testing.T, handle func(conn net.Conn)) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go handle(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(conns)
		for c := range conns {
			_ = c.Close()
		}
	})
	return path
}

func readRequest(conn net.Conn) error {
	buf := make([]byte, 0, 256)
	chunk := make([]byte, 256)
	for !bytes.HasSuffix(buf, endCommand) {
		n, err := conn.Read(chunk)
		if err != nil {
			return err
		}
		buf = append(buf, chunk[:n]...)
	}
	return nil
}

func TestClientAgainstNonFail2ban(t *testing.T) {
	pong := mustHex(t, pythonReplies["pong_p5"])
	tests := []struct {
		name    string
		handle  func(net.Conn)
		timeout time.Duration
		check   func(t *testing.T, err error)
	}{
		{
			name: "garbage with terminator",
			handle: func(c net.Conn) {
				if readRequest(c) == nil {
					_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n<F2B_END_COMMAND>"))
				}
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
			},
		},
		{
			name: "garbage then close",
			handle: func(c net.Conn) {
				if readRequest(c) == nil {
					_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
				}
				_ = c.Close()
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
			},
		},
		{
			name: "never answers",
			handle: func(c net.Conn) {
				_ = readRequest(c)
				// Hold the connection open without a word.
				buf := make([]byte, 1)
				_, _ = c.Read(buf)
			},
			timeout: 300 * time.Millisecond,
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
					t.Fatalf("err = %v, want a timeout", err)
				}
			},
		},
		{
			name: "endless stream",
			handle: func(c net.Conn) {
				_ = readRequest(c)
				junk := bytes.Repeat([]byte{'x'}, 64<<10)
				for {
					if _, err := c.Write(junk); err != nil {
						return
					}
				}
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "larger than") {
					t.Fatalf("err = %v, want ErrProtocol about the size", err)
				}
			},
		},
		{
			name: "reply split at every byte",
			handle: func(c net.Conn) {
				if readRequest(c) != nil {
					return
				}
				for _, b := range append(append([]byte{}, pong...), endCommand...) {
					_, _ = c.Write([]byte{b})
					time.Sleep(time.Millisecond)
				}
			},
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fakePeer(t, tt.handle)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			c := New(Options{Path: path, Timeout: timeout, MaxReply: 1 << 20})
			defer func() { _ = c.Close() }()
			start := time.Now()
			err := c.Ping(context.Background())
			if took := time.Since(start); took > timeout+time.Second {
				t.Errorf("ping took %s with timeout %s", took, timeout)
			}
			tt.check(t, err)
		})
	}
}

func TestClientTerminatorInsidePayload(t *testing.T) {
	// A payload that itself contains the terminator, sent in two writes
	// split right after the embedded terminator.
	var reply bytes.Buffer
	enc := ogorek.NewEncoderWithConfig(&reply, &ogorek.EncoderConfig{Protocol: 4})
	payload := "line with <F2B_END_COMMAND> inside"
	if err := enc.Encode(ogorek.Tuple{int64(0), payload}); err != nil {
		t.Fatal(err)
	}
	raw := reply.Bytes()
	cut := bytes.Index(raw, endCommand) + len(endCommand)
	path := fakePeer(t, func(c net.Conn) {
		if readRequest(c) != nil {
			return
		}
		_, _ = c.Write(raw[:cut])
		time.Sleep(50 * time.Millisecond)
		_, _ = c.Write(append(append([]byte{}, raw[cut:]...), endCommand...))
	})
	c := New(Options{Path: path, Timeout: 2 * time.Second})
	defer func() { _ = c.Close() }()
	got, err := c.Command(context.Background(), "get", "x")
	if err != nil {
		t.Fatal(err)
	}
	if got != payload {
		t.Fatalf("got %#v, want %q", got, payload)
	}
}

func TestClientContextCancel(t *testing.T) {
	path := fakePeer(t, func(c net.Conn) {
		_ = readRequest(c)
		buf := make([]byte, 1)
		_, _ = c.Read(buf)
	})
	c := New(Options{Path: path, Timeout: time.Minute})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := c.Ping(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cancel took %s", took)
	}
}

func TestClientMissingSocketAndClosed(t *testing.T) {
	c := New(Options{Path: filepath.Join(t.TempDir(), "absent.sock"), Timeout: time.Second})
	if err := c.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("err = %v, want a connect error", err)
	}
	_ = c.Close()
	if err := c.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Close: err = %v", err)
	}
	if _, err := c.Command(context.Background()); err == nil {
		t.Fatal("empty command accepted")
	}
}

func FuzzDecodeReply(f *testing.F) {
	for _, h := range pythonReplies {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Add([]byte("ERROR: x"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeReply([]string{"fuzz"}, data)
		if err == nil {
			// Whatever decoded must also survive the status parsers.
			_, _ = statusPairs(v)
			_, _ = parseJailStatus("j", v)
			_, _ = toFloat(v)
			return
		}
		if v != nil {
			t.Fatalf("value %#v together with error %v", v, err)
		}
		var se *ServerError
		if !errors.As(err, &se) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("error %v is neither a ServerError nor ErrProtocol", err)
		}
	})
}

func FuzzStatusParsers(f *testing.F) {
	for _, h := range pythonReplies {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ogorek.NewDecoder(bytes.NewReader(data)).Decode()
		if err != nil {
			return
		}
		_, _ = statusPairs(v)
		_, _ = parseJailStatus("j", v)
		_, _ = toFloat(v)
	})
}
