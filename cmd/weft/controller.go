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
		cfg          controller.Config
		etcd         string
		clusterState string
		logLevel     string
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a weft controller replica (REST API over etcd)",
		Long: `Run a weft controller replica.

The controller holds the desired state of every tenant's virtual networks in
etcd and serves the declarative API under /apis/weft/v1 (used by 'weft apply',
'weft get', ...), plus /healthz, /readyz, /version, /metrics and
/openapi.json.

The API is HTTPS. On a cluster's first start the controller creates the
cluster key (--cluster-key-file, default DATA-DIR/cluster.key: every replica
of the cluster needs the same file; keep a copy) and the cluster's CA, kept
in etcd under that key; each replica then issues itself a serving
certificate for its listen address, loopback, its host name and --tls-san
names, unless --tls-cert/--tls-key give one. Every request but /healthz,
/readyz, /version and the CA needs a credential: a token ('weft token
create') or a client certificate ('weft cert create'; --client-ca accepts
another CA's). On its first start the controller also writes
DATA-DIR/admin.config, a CLI configuration with a cluster-admin token and the
CA: export WEFT_CONFIG=DATA-DIR/admin.config. /metrics is also served without
a credential on --metrics-listen (loopback). --insecure-http serves plain HTTP
and lets requests without a credential act as a cluster admin: labs only.

Agents connect to --agent-listen: a TCP config stream that carries each
host's compiled view as versioned deltas, and UDP (same port) for heartbeats
and on-demand lookups, authenticated with each host's key, which the host's
agent gets by enrolling with a bootstrap token ('weft token create --role
bootstrap --host NAME').

By default it runs a single-node etcd embedded in --data-dir (durable: every
acknowledged write is fsynced). With --etcd-endpoints it uses an external etcd
cluster instead, and several replicas can share it.

Embedded HA: with --etcd-peer-listen the embedded etcd is one member of a
cluster of several controllers (three or five), each embedding a member: start
them with the same --etcd-initial-cluster, or start one and let the others
--join it (a joining member is added as a learner and promotes itself once it
has caught up; 'weft etcd member list|add|remove' changes the membership at
run time). Peers, and etcd clients on --etcd-client-listen, use TLS with
certificates of an etcd CA derived from the cluster key, so every member needs
the same --cluster-key-file before it starts (create it once with
'umask 077; openssl rand -hex 32 > cluster.key'). A replica whose etcd loses
its quorum refuses writes (503, with the reason) and says so on /readyz, and
closes its agents' config streams so that they move to a healthy replica.`,
		Example: `  # single node, state in ./weft-data, API on 127.0.0.1:7443
  weft controller --data-dir ./weft-data
  export WEFT_CONFIG=$PWD/weft-data/admin.config

  # a replica on an external etcd cluster over TLS, sharing the first one's cluster key
  weft controller --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \
      --etcd-cacert etcd-ca.pem --etcd-cert weft.pem --etcd-key weft-key.pem \
      --api-listen 10.0.0.5:7443 --cluster-key-file /etc/weft/cluster.key --tls-san weft.example.net

  # embedded HA: three controllers, each embedding a member of one etcd cluster
  weft controller --data-dir /var/lib/weft --cluster-key-file /etc/weft/cluster.key \
      --etcd-name a --etcd-peer-listen https://10.0.0.1:2380 --etcd-client-listen https://10.0.0.1:2379 \
      --etcd-initial-cluster a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380 \
      --api-listen 10.0.0.1:7443 --agent-listen 10.0.0.1:7444
  # (b and c alike) — or a fourth one joining the running cluster
  weft controller --data-dir /var/lib/weft --cluster-key-file /etc/weft/cluster.key \
      --etcd-name d --etcd-peer-listen https://10.0.0.4:2380 --join https://10.0.0.1:2379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if etcd != "" {
				cfg.EtcdEndpoints = strings.Split(etcd, ",")
			}
			switch clusterState {
			case "new":
			case "existing":
				cfg.EtcdExisting = true
			default:
				return fmt.Errorf("--etcd-initial-cluster-state %q: want new or existing", clusterState)
			}
			cfg.Logger, cfg.Version = log, clientVersion().Version
			c, err := controller.New(cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.Start(ctx); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "weft controller serving the API on %s and agents on %s (Ctrl-C to stop)\n", c.ServerURL(), c.AgentAddr())
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
	f.StringVar(&cfg.DataDir, "data-dir", "weft-data", "directory of the embedded etcd's data (unless --etcd-endpoints), the cluster key and admin.config")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of an external etcd cluster (default: embedded etcd)")
	f.StringVar(&cfg.EtcdCACert, "etcd-cacert", "", "PEM file of the CA of the external etcd members' certificates (https:// endpoints)")
	f.StringVar(&cfg.EtcdCert, "etcd-cert", "", "PEM client certificate for the external etcd")
	f.StringVar(&cfg.EtcdKey, "etcd-key", "", "PEM key of --etcd-cert")
	f.StringVar(&cfg.EtcdUser, "etcd-user", "", "user of the external etcd's authentication")
	f.StringVar(&cfg.EtcdPassword, "etcd-password", "", "password of --etcd-user (other local users can see it in the process list)")
	f.StringVar(&cfg.EtcdPeerListen, "etcd-peer-listen", "", "make the embedded etcd a member of a cluster: its peer URL (https://IP:PORT)")
	f.StringVar(&cfg.EtcdName, "etcd-name", "", "name of this replica's etcd member (with --etcd-peer-listen)")
	f.StringVar(&cfg.EtcdClientListen, "etcd-client-listen", "", "also serve etcd clients on this URL (https://IP:PORT, client certificates from the cluster key): other replicas' --etcd-endpoints, 'weft etcd', 'weft backup'")
	f.StringVar(&cfg.EtcdInitialCluster, "etcd-initial-cluster", "", "members of a new etcd cluster, NAME=PEER-URL,... (default: this member alone)")
	f.StringVar(&clusterState, "etcd-initial-cluster-state", "new", "new, or existing for a member added with 'weft etcd member add'")
	f.StringVar(&cfg.EtcdJoin, "join", "", "client URL(s) of a running member: add this replica's member to that cluster and start it")
	f.StringVar(&cfg.APIListen, "api-listen", "127.0.0.1:7443", "address of the REST API")
	f.StringVar(&cfg.AgentListen, "agent-listen", "127.0.0.1:7444", "southbound address for agents: config stream on TCP, heartbeats and lookups on UDP, same port (\"off\" disables it)")
	f.StringVar(&cfg.AdvertiseAgent, "advertise-agent", "", "southbound address told to agents (default: the bound --agent-listen address)")
	f.StringVar(&cfg.ClusterKeyFile, "cluster-key-file", "", "the cluster key, which seals the CA's key and the host keys in etcd (default DATA-DIR/cluster.key, created if missing; the same file on every replica)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM serving certificate of the API (default: one issued by the cluster CA)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM key of --tls-cert")
	f.StringVar(&cfg.ClientCAFile, "client-ca", "", "PEM file of CAs whose client certificates are accepted besides the cluster CA's")
	f.StringSliceVar(&cfg.TLSSANs, "tls-san", nil, "extra DNS names or IPs of the issued serving certificate (repeatable)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "127.0.0.1:7445", "address serving /metrics without a credential (\"\" for none; keep it on loopback)")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "serve the API over plain HTTP, requests without a credential acting as cluster-admin (labs only; logged as a warning)")
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
