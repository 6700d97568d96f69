// Command weft-cni is weft's CNI plugin (CNI spec 1.1: ADD, DEL, CHECK, GC,
// STATUS, VERSION). It is a thin client: it hands each call, as the runtime
// gave it, to the CNI server of the weft agent on its host over the
// agent's unix socket (the network configuration's "agentSocket", default
// /run/weft/cni.sock) and prints the answer. The agent owns the data plane
// and the credentials; the plugin holds none. See package
// github.com/weftnet/weft/agent/cniserver for what the calls do and the
// network configuration they take.
//
// The runtime starts the plugin for every call, so its start is part of
// every ADD: it links only the CNI library's skel and types and the
// protocol's client (TestPluginImports keeps it so). Build it with
// CGO_ENABLED=0, as scripts/release.sh does: with cgo, the net package
// that the CNI types use links the C library, and the dynamic loader makes
// the plugin's start about 1.6 times as long.
//
// Run by hand, `weft-cni version [-o json]` prints the version and VCS
// revision it was built from, as `weft version --client` does (runtimes
// run plugins without arguments; run without CNI_COMMAND, it prints the
// same on stderr).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/agent/cnirpc"
	"github.com/weftnet/weft/internal/buildinfo"
)

// callTimeout bounds one call to the agent; the agent bounds its own
// work (an ADD waits until the endpoint is programmed) well below it.
const callTimeout = 5 * time.Minute

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		if err := printVersion(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "weft-cni:", err)
			os.Exit(2)
		}
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    call("ADD"),
		Del:    call("DEL"),
		Check:  call("CHECK"),
		GC:     call("GC"),
		Status: call("STATUS"),
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), about())
}

// call returns the skel function of a CNI command: it forwards the call to
// the agent, and for ADD prints the result in the configuration's version.
func call(command string) func(*skel.CmdArgs) error {
	return func(a *skel.CmdArgs) error {
		var conf struct {
			CNIVersion  string `json:"cniVersion"`
			AgentSocket string `json:"agentSocket"`
		}
		if err := json.Unmarshal(a.StdinData, &conf); err != nil {
			return types.NewError(types.ErrDecodingFailure, "parse the network configuration", err.Error())
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		res, err := cnirpc.Call(ctx, cmp.Or(conf.AgentSocket, cnirpc.DefaultSocket), &cnirpc.Request{
			Command: command, ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName, Args: a.Args, Config: a.StdinData,
		})
		if err != nil || command != "ADD" {
			return err
		}
		r, err := types100.NewResult(res)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "decode the weft agent's result", err.Error())
		}
		return types.PrintResult(r, conf.CNIVersion)
	}
}

// about is printed when the plugin runs without CNI_COMMAND: its version
// and the VCS revision it was built from.
func about() string {
	return "weft-cni " + buildinfo.Read().String() + ": weft's CNI plugin; it asks the weft agent of this host"
}

// printVersion answers `weft-cni version [-o text|json]`.
func printVersion(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	output := fs.String("o", "text", "output format: text or json")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version: unexpected argument %q", fs.Arg(0))
	}
	bi := buildinfo.Read()
	switch *output {
	case "text":
		_, err := fmt.Fprintf(w, "weft-cni %s\n", bi)
		return err
	case "json":
		b, err := json.MarshalIndent(bi, "", "  ")
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	return fmt.Errorf("version: -o %q: want text or json", *output)
}
