package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
)

// etcdAccess is how a tool reaches a cluster's etcd: the embedded etcd's
// socket in a data dir, or endpoints (embedded members' client URLs with
// the cluster key's etcd CA, or an external cluster with TLS files).
type etcdAccess struct {
	cfg       controller.Config
	endpoints string
}

func (e *etcdAccess) register(f *pflag.FlagSet) {
	f.StringVar(&e.cfg.DataDir, "data-dir", "weft-data", "data dir of a controller on this machine: its embedded etcd's socket and its cluster key (unless --etcd-endpoints, --cluster-key-file)")
	f.StringVar(&e.endpoints, "etcd-endpoints", "", "comma-separated etcd client URLs (members' --etcd-client-listen, or an external cluster)")
	f.StringVar(&e.cfg.ClusterKeyFile, "cluster-key-file", "", "the cluster key (default DATA-DIR/cluster.key): with https:// endpoints and no --etcd-cacert, also the TLS credential")
	f.StringVar(&e.cfg.EtcdCACert, "etcd-cacert", "", "PEM CA of an external etcd's members")
	f.StringVar(&e.cfg.EtcdCert, "etcd-cert", "", "PEM client certificate for an external etcd")
	f.StringVar(&e.cfg.EtcdKey, "etcd-key", "", "PEM key of --etcd-cert")
}

// client connects to etcd.
func (e *etcdAccess) client() (*clientv3.Client, error) {
	cfg := e.cfg
	cfg.EtcdEndpoints = splitCSV(e.endpoints)
	cc, err := controller.EtcdClientConfig(cfg) // the key file defaults to the data dir's
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd: %w", err)
	}
	return cli, nil
}

// clusterKey reads the cluster key.
func (e *etcdAccess) clusterKey() ([]byte, error) {
	path := e.cfg.ClusterKeyFile
	if path == "" {
		path = filepath.Join(e.cfg.DataDir, "cluster.key")
	}
	return secrets.ReadKeyFile(path)
}

func splitCSV(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func newEtcdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Manage the etcd cluster of embedded HA controllers",
		Long: `Manage the etcd cluster behind the controllers: its members (embedded HA: each
controller embeds one), and the space of its backend.

The commands reach etcd through a controller's data dir on this machine (the
embedded etcd's socket, --data-dir), or through members' client URLs
(--etcd-endpoints; the members' --etcd-client-listen, authenticated with the
cluster key's etcd CA, or an external cluster with --etcd-cacert/--etcd-cert).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newEtcdMemberCmd(), newEtcdDefragCmd())
	return cmd
}

func newEtcdMemberCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "List, add and remove etcd members", Args: cobra.NoArgs}
	cmd.AddCommand(newEtcdMemberListCmd(), newEtcdMemberAddCmd(), newEtcdMemberRemoveCmd())
	return cmd
}

// memberRow is a member as 'weft etcd member list' prints it.
type memberRow struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Learner    bool     `json:"learner,omitempty"`
	Leader     bool     `json:"leader,omitempty"`
}

func newEtcdMemberListCmd() *cobra.Command {
	var (
		access etcdAccess
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the etcd cluster's members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output); err != nil {
				return err
			}
			return withEtcd(cmd.Context(), &access, func(ctx context.Context, cli *clientv3.Client) error {
				ml, err := cli.MemberList(ctx)
				if err != nil {
					return fmt.Errorf("list members: %w", err)
				}
				var leader uint64
				if st, err := cli.Status(ctx, cli.Endpoints()[0]); err == nil {
					leader = st.Leader
				}
				rows := make([]memberRow, 0, len(ml.Members))
				for _, m := range ml.Members {
					rows = append(rows, memberRow{ID: fmt.Sprintf("%x", m.ID), Name: m.Name, PeerURLs: m.PeerURLs,
						ClientURLs: realURLs(m.ClientURLs), Learner: m.IsLearner, Leader: m.ID == leader})
				}
				return printMembers(cmd.OutOrStdout(), rows, output)
			})
		},
	}
	access.register(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table, json or yaml")
	return cmd
}

// realURLs drops the placeholder client URL of a member serving only its
// unix socket.
func realURLs(urls []string) []string {
	var out []string
	for _, u := range urls {
		if !strings.HasPrefix(u, "unix:") {
			out = append(out, u)
		}
	}
	return out
}

func printMembers(w io.Writer, rows []memberRow, format string) error {
	switch format {
	case formatJSON, formatYAML:
		b, err := json.MarshalIndent(rows, "", "  ")
		if err == nil && format == formatYAML {
			b, err = yaml.JSONToYAML(b)
		}
		if err != nil {
			return err
		}
		_, err = w.Write(ensureNewline(b))
		return err
	}
	var cells [][]string
	for _, r := range rows {
		role := "voter"
		switch {
		case r.Leader:
			role = "leader"
		case r.Learner:
			role = "learner"
		}
		cells = append(cells, []string{r.ID, orNone(r.Name), strings.Join(r.PeerURLs, ","), orNone(strings.Join(r.ClientURLs, ",")), role})
	}
	return writeTable(w, []string{"ID", "NAME", "PEER-URLS", "CLIENT-URLS", "ROLE"}, cells)
}

func newEtcdMemberAddCmd() *cobra.Command {
	var access etcdAccess
	cmd := &cobra.Command{
		Use:   "add NAME PEER-URL",
		Short: "Add a member (as a learner) and print how to start its controller",
		Long: `Add an etcd member to the cluster, as a learner: it counts towards no quorum
until it has caught up, when its controller promotes it to a voting member.
Start the new member's controller with the flags printed (and the cluster's
cluster key file). 'weft controller --join URL' does both steps at once.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, peer := args[0], args[1]
			if u, err := url.Parse(peer); err != nil || u.Scheme != "https" || u.Port() == "" {
				return usageErrorf("peer URL %q: want https://HOST:PORT", peer)
			}
			return withEtcd(cmd.Context(), &access, func(ctx context.Context, cli *clientv3.Client) error {
				add, err := cli.MemberAddAsLearner(ctx, []string{peer})
				if err != nil {
					return fmt.Errorf("add member %s: %w", peer, err)
				}
				var initial []string
				for _, m := range add.Members {
					n := m.Name
					if m.ID == add.Member.ID {
						n = name
					}
					for _, u := range m.PeerURLs {
						initial = append(initial, n+"="+u)
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added member %s (%x) as a learner; start its controller with:\n  --etcd-name %s --etcd-peer-listen %s --etcd-initial-cluster %s --etcd-initial-cluster-state existing\n",
					name, add.Member.ID, name, peer, strings.Join(initial, ","))
				return nil
			})
		},
	}
	access.register(cmd.Flags())
	return cmd
}

func newEtcdMemberRemoveCmd() *cobra.Command {
	var access etcdAccess
	cmd := &cobra.Command{
		Use:   "remove NAME|ID",
		Short: "Remove a member from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withEtcd(cmd.Context(), &access, func(ctx context.Context, cli *clientv3.Client) error {
				ml, err := cli.MemberList(ctx)
				if err != nil {
					return fmt.Errorf("list members: %w", err)
				}
				var found *etcdserverpb.Member
				for _, m := range ml.Members {
					if m.Name == args[0] || fmt.Sprintf("%x", m.ID) == args[0] {
						found = m
					}
				}
				if found == nil {
					return fmt.Errorf("no member named %q (see 'weft etcd member list')", args[0])
				}
				if _, err := cli.MemberRemove(ctx, found.ID); err != nil {
					return fmt.Errorf("remove member %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed member %s (%x); stop its controller and clear its data dir before it rejoins\n", found.Name, found.ID)
				return nil
			})
		},
	}
	access.register(cmd.Flags())
	return cmd
}

func newEtcdDefragCmd() *cobra.Command {
	var access etcdAccess
	cmd := &cobra.Command{
		Use:   "defrag",
		Short: "Reclaim etcd's space: compact, defragment every member reached, disarm NOSPACE",
		Long: `Reclaim the space of etcd's backend after it filled its quota (a NOSPACE alarm,
when controllers refuse writes): compact the history up to the current
revision, defragment each member of --etcd-endpoints (or the embedded one of
--data-dir), then disarm the alarms. Free space first if the data itself is
too large (delete objects; deletes are accepted under the alarm). A
defragmentation blocks the member's writes for its duration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withEtcd(cmd.Context(), &access, func(ctx context.Context, cli *clientv3.Client) error {
				out := cmd.OutOrStdout()
				resp, err := cli.Get(ctx, "weft-defrag", clientv3.WithCountOnly())
				if err != nil {
					return fmt.Errorf("read the revision: %w", err)
				}
				if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
					return fmt.Errorf("compact to %d: %w", resp.Header.Revision, err)
				}
				fmt.Fprintf(out, "compacted to revision %d\n", resp.Header.Revision)
				for _, ep := range cli.Endpoints() {
					st, err := cli.Status(ctx, ep)
					if err != nil {
						return fmt.Errorf("status of %s: %w", ep, err)
					}
					if _, err := cli.Defragment(ctx, ep); err != nil {
						return fmt.Errorf("defragment %s: %w", ep, err)
					}
					after, err := cli.Status(ctx, ep)
					if err != nil {
						return fmt.Errorf("status of %s: %w", ep, err)
					}
					fmt.Fprintf(out, "defragmented %s: %s -> %s\n", ep, bytesOf(st.DbSize), bytesOf(after.DbSize))
				}
				alarms, err := cli.AlarmList(ctx)
				if err != nil {
					return fmt.Errorf("list alarms: %w", err)
				}
				for _, a := range alarms.Alarms {
					if _, err := cli.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a)); err != nil {
						return fmt.Errorf("disarm %s on %x: %w", a.Alarm, a.MemberID, err)
					}
					fmt.Fprintf(out, "disarmed %s on member %x\n", a.Alarm, a.MemberID)
				}
				return nil
			})
		},
	}
	access.register(cmd.Flags())
	return cmd
}

func bytesOf(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }

// withEtcd runs f with a client of access, bounded to a minute.
func withEtcd(ctx context.Context, access *etcdAccess, f func(context.Context, *clientv3.Client) error) error {
	return withEtcdFor(ctx, access, time.Minute, f)
}
