package cnirpc

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		code     int
		body     string
		wantErr  string
	}{
		{"ok with length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, "{}", ""},
		{"ok to the end", "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}", 200, `{"a":1}`, ""},
		{"length shorter than read", "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{}", 200, "{", ""},
		{"error", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}", 503, "{}", ""},
		{"no body", "HTTP/1.1 200 OK\r\n\r\n", 200, "", ""},
		{"cut header", "HTTP/1.1 200 OK\r\nContent-Le", 0, "", "no complete HTTP header"},
		{"not http", "SSH-2.0\r\n\r\n", 0, "", "not an HTTP/1 status line"},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", 0, "", "status line"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 0, "", "transfer-encoding"},
		{"length beyond body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", 0, "", "content-length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body, err := parseAnswer([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseAnswer = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseAnswer: %v", err)
			}
			if diff := cmp.Diff([]any{tc.code, tc.body}, []any{code, string(body)}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// serve serves h on a unix socket until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cni.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock
}

// TestCallNetHTTP: Call against a net/http server, as the agent serves:
// the request arrives whole, results of every size and errors come back.
func TestCallNetHTTP(t *testing.T) {
	big := `{"x":"` + strings.Repeat("a", 100_000) + `"}`
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if r.Method != http.MethodPost || r.URL.Path != Path || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch req.Command {
		case "ADD":
			_, _ = w.Write([]byte(`{"echo":` + string(req.Config) + `}`))
		case "BIG":
			_, _ = w.Write([]byte(big))
		case "DEL":
		case "FAIL":
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(types.NewError(types.ErrTryAgainLater, "busy", "later"))
		default:
			http.Error(w, "what?", http.StatusTeapot)
		}
	}))
	ctx := t.Context()
	call := func(cmd string) (string, error) {
		res, err := Call(ctx, sock, &Request{Command: cmd, ContainerID: "c1", Config: json.RawMessage(`{"name":"n"}`)})
		return string(res), err
	}
	if got, err := call("ADD"); err != nil || got != `{"echo":{"name":"n"}}` {
		t.Errorf("ADD = %q, %v", got, err)
	}
	if got, err := call("BIG"); err != nil || got != big {
		t.Errorf("BIG = %d bytes, %v; want %d bytes", len(got), err, len(big))
	}
	if got, err := call("DEL"); err != nil || got != "" {
		t.Errorf("DEL = %q, %v; want nothing", got, err)
	}
	var te *types.Error
	if _, err := call("FAIL"); !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || te.Msg != "busy" {
		t.Errorf("FAIL = %v, want the agent's error", err)
	}
	if _, err := call("TEA"); !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "418") {
		t.Errorf("TEA = %v, want ErrInternal naming the status", err)
	}
}

// TestCallBounded: an agent that takes the request and never answers
// holds the plugin only until its context ends.
func TestCallBounded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Call(ctx, sock, &Request{Command: "ADD"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Details, "deadline") {
		t.Errorf("Call = %v, want ErrTryAgainLater after the deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Call took %v", took)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Error("the call never connected")
	}
}

// TestCallUnreachable: no agent is ErrTryAgainLater (the runtime retries).
func TestCallUnreachable(t *testing.T) {
	_, err := Call(t.Context(), filepath.Join(t.TempDir(), "none.sock"), &Request{Command: "ADD"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Errorf("Call = %v, want ErrTryAgainLater", err)
	}
}
