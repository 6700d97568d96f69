package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/controller"
)

func newControllerCmd() *cobra.Command {
	var (
		dataDir     string
		etcd        string
		apiListen   string
		agentListen string
		advertise   string
		logLevel    string
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a weft controller replica (REST API over etcd)",
		Long: `Run a weft controller replica.

The controller holds the desired state of every tenant's virtual networks in
etcd and serves the declarative API under /apis/weft/v1 (used by 'weft apply',
'weft get', ...), plus /healthz, /readyz, /metrics and /openapi.json.

Agents connect to --agent-listen: a TCP config stream that carries each
host's compiled view as versioned deltas, and UDP (same port) for heartbeats
and on-demand lookups. Host keys are derived from the cluster key, written to
DATA-DIR/cluster.key; 'weft host-key NAME' prints a host's key.

By default it runs a single-node etcd embedded in --data-dir (durable: every
acknowledged write is fsynced). With --etcd-endpoints it uses an external etcd
cluster instead, and several replicas can share it.`,
		Example: `  # single node, state in ./weft-data, API on 127.0.0.1:7443
  weft controller --data-dir ./weft-data

  # a replica on an external etcd cluster
  weft controller --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379 --api-listen :7443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			var endpoints []string
			if etcd != "" {
				endpoints = strings.Split(etcd, ",")
			}
			c, err := controller.New(controller.Config{
				DataDir: dataDir, EtcdEndpoints: endpoints, APIListen: apiListen, AgentListen: agentListen,
				AdvertiseAgent: advertise, Logger: log, Version: clientVersion().Version,
			})
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.Start(ctx); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "weft controller serving the API on http://%s and agents on %s (Ctrl-C to stop)\n", c.APIAddr(), c.AgentAddr())
			select {
			case <-ctx.Done():
			case <-c.Done():
			}
			closeErr := c.Close()
			if err := c.Err(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("API server stopped: %w", err)
			}
			return closeErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "weft-data", "directory of the embedded etcd's data (ignored with --etcd-endpoints)")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of an external etcd cluster (default: embedded etcd)")
	f.StringVar(&apiListen, "api-listen", "127.0.0.1:7443", "address of the REST API")
	f.StringVar(&agentListen, "agent-listen", "127.0.0.1:7444", "southbound address for agents: config stream on TCP, heartbeats and lookups on UDP, same port (\"off\" disables it)")
	f.StringVar(&advertise, "advertise-agent", "", "southbound address told to agents (default: the bound --agent-listen address)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// newLogger returns a JSON slog logger at the given level.
func newLogger(w interface{ Write([]byte) (int, error) }, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if w == nil {
		w = os.Stderr
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
