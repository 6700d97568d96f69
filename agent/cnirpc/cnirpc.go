// Package cnirpc is the protocol between the weft-cni plugin and the CNI
// server of the agent on its host: one HTTP POST per CNI call, over the
// agent's unix socket, carrying what the runtime gave the plugin (the
// CNI_* environment and the network configuration). The answer is the
// call's result (ADD: a CNI result in the configuration's cniVersion;
// the others: nothing) or a CNI error, with the code the plugin returns.
//
// The plugin holds no credentials: it only reaches the socket, which the
// agent creates with mode 0600 (root, as the runtime that runs plugins).
package cnirpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

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

// maxAnswer bounds an answer the plugin reads.
const maxAnswer = 1 << 20

// Call sends req to the agent serving at socket. It returns the result
// (nil when the call has none), or the call's *types.Error; an agent that
// cannot be reached is types.ErrTryAgainLater.
func Call(ctx context.Context, socket string, req *Request) (json.RawMessage, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "encode the request to the weft agent", err.Error())
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+Path, bytes.NewReader(body))
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "request to the weft agent", err.Error())
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "the weft agent is not reachable", fmt.Sprintf("socket %s: %v", socket, err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "read the weft agent's answer", err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		var e types.Error
		if json.Unmarshal(b, &e) != nil || e.Msg == "" {
			return nil, types.NewError(types.ErrInternal, "the weft agent answered "+resp.Status, string(b))
		}
		return nil, &e
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

// Handler answers calls with handle: its result (nil: none) or its error;
// an error that is not a *types.Error is answered as types.ErrInternal.
// The request's context ends when the plugin goes away.
func Handler(handle func(ctx context.Context, req *Request) (json.RawMessage, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(io.LimitReader(r.Body, maxAnswer)).Decode(&req); err != nil {
			writeError(w, types.NewError(types.ErrDecodingFailure, "decode the plugin's request", err.Error()))
			return
		}
		res, err := handle(r.Context(), &req)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(res)
	})
	return mux
}

func writeError(w http.ResponseWriter, err error) {
	var e *types.Error
	if !errors.As(err, &e) {
		e = types.NewError(types.ErrInternal, err.Error(), "")
	}
	w.Header().Set("Content-Type", "application/json")
	status := http.StatusBadRequest
	if e.Code == types.ErrTryAgainLater || e.Code == types.ErrInternal || e.Code == types.ErrPluginNotAvailable {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}
