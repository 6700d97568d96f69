package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/agent/cnirpc"
)

// rpcHandler serves the cnirpc protocol: each call is answered with
// handle's result (nil: none) or its error; an error that is not a
// *types.Error is answered as types.ErrInternal. The request's context
// ends when the plugin goes away. (The plugin's side, cnirpc.Call, stays
// free of net/http, which would slow its start.)
func rpcHandler(handle func(ctx context.Context, req *cnirpc.Request) (json.RawMessage, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cnirpc.Path, func(w http.ResponseWriter, r *http.Request) {
		var req cnirpc.Request
		if err := json.NewDecoder(io.LimitReader(r.Body, cnirpc.MaxMessage)).Decode(&req); err != nil {
			writeRPCError(w, types.NewError(types.ErrDecodingFailure, "decode the plugin's request", err.Error()))
			return
		}
		res, err := handle(r.Context(), &req)
		if err != nil {
			writeRPCError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(res)
	})
	return mux
}

func writeRPCError(w http.ResponseWriter, err error) {
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
