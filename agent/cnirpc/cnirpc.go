// Package cnirpc is the protocol between the weft-cni plugin and the CNI
// server of the agent on its host: one HTTP POST of a Request (as JSON)
// to Path per CNI call, over the agent's unix socket, carrying what the
// runtime gave the plugin (the CNI_* environment and the network
// configuration). The answer is 200 with the call's result (ADD: a CNI
// result in the configuration's cniVersion; the others: nothing) or
// another status with a CNI error (types.Error as JSON), with the code
// the plugin returns. The package is the plugin's side (Call); the
// agent's is package cniserver, which serves it with net/http.
//
// The plugin holds no credentials: it only reaches the socket, which the
// agent creates with mode 0600 (root, as the runtime that runs plugins).
package cnirpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultSocket is where the agent serves, unless the network
// configuration names another ("agentSocket").
const DefaultSocket = "/run/weft/cni.sock"

// Path is the URL path of every call.
const Path = "/v1/cni"

// Request is one CNI call.
type Request struct {
	// Command is CNI_COMMAND: ADD, DEL, CHECK, GC or STATUS.
	Command     string `json:"command"`
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// Args is CNI_ARGS ("K1=V1;K2=V2").
	Args string `json:"args,omitempty"`
	// Config is the network configuration the runtime wrote on stdin.
	Config json.RawMessage `json:"config"`
}

// MaxMessage bounds a request and an answer.
const MaxMessage = 1 << 20

// Call sends req to the agent serving at socket. It returns the result
// (nil when the call has none), or the call's *types.Error; an agent that
// cannot be reached is types.ErrTryAgainLater.
//
// The plugin runs once per CNI call, so its start is part of every ADD:
// Call speaks HTTP/1.0 itself (one request, the answer read to the end of
// the connection) rather than with net/http, which with crypto/tls and
// x509 doubled the plugin's binary (9.6 against 4.7 MB) and made its
// start about a quarter longer (TestPluginImports in cmd/weft-cni keeps
// it out).
func Call(ctx context.Context, socket string, req *Request) (json.RawMessage, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "encode the request to the weft agent", err.Error())
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "the weft agent is not reachable", fmt.Sprintf("socket %s: %v", socket, err))
	}
	defer conn.Close()
	// The context bounds the whole call: its end unblocks the write and
	// the read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	head := fmt.Sprintf("POST %s HTTP/1.0\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", Path, len(body))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "send the request to the weft agent", callErr(ctx, err))
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxHead+MaxMessage+1))
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "read the weft agent's answer", callErr(ctx, err))
	}
	code, status, b, err := parseAnswer(b)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "read the weft agent's answer", err.Error())
	}
	if code != 200 {
		var e types.Error
		if json.Unmarshal(b, &e) != nil || e.Msg == "" {
			return nil, types.NewError(types.ErrInternal, "the weft agent answered "+status, string(b))
		}
		return nil, &e
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

// maxHead bounds the status line and headers of an answer.
const maxHead = 8 << 10

// callErr is the text of an I/O error of a call, the context's error if
// it ended the call.
func callErr(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return ctx.Err().Error()
	}
	return err.Error()
}

// parseAnswer splits an HTTP/1.x answer read to the end of its
// connection into its status code, status text and body (trimmed to its
// Content-Length, if it has one).
func parseAnswer(b []byte) (code int, status string, body []byte, err error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || len(head) > maxHead {
		return 0, "", nil, fmt.Errorf("no complete HTTP header in %d bytes", len(b))
	}
	lines := strings.Split(string(head), "\r\n")
	proto, status, _ := strings.Cut(lines[0], " ")
	if !strings.HasPrefix(proto, "HTTP/1.") || len(status) < 3 {
		return 0, "", nil, fmt.Errorf("not an HTTP/1 status line: %q", lines[0])
	}
	if code, err = strconv.Atoi(status[:3]); err != nil {
		return 0, "", nil, fmt.Errorf("status line %q: %w", lines[0], err)
	}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > len(body) {
				return 0, "", nil, fmt.Errorf("content-length %q: the body has %d bytes", v, len(body))
			}
			body = body[:n]
		case "transfer-encoding":
			return 0, "", nil, fmt.Errorf("transfer-encoding %q: want none", v)
		}
	}
	if len(body) > MaxMessage {
		return 0, "", nil, fmt.Errorf("answer longer than %d bytes", MaxMessage)
	}
	return code, status, body, nil
}
