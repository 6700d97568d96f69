package main

import (
	"github.com/spf13/cobra"

	"github.com/weftnet/weft/demo"
)

func newDemoCmd() *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a controller and a small data centre of hosts in network namespaces with two tenants",
		Long: `Run weft end to end on this machine (needs root).

weft demo builds a small data centre out of network namespaces: an underlay
bridge (netns wftdemo-ul) and --hosts host namespaces (wftdemo-h1, ...) with
the underlay addresses of examples/two-tenants.yaml (192.0.2.11, ...). It
starts a controller in this process (embedded etcd in a temporary directory)
reached over a veth from this namespace (wftdemo-ctl, 198.51.100.1/24, or
203.0.113.1/24 if the machine routes 198.51.100.0/24), applies the two-tenant
example (acme and globex, both on 10.0.0.0/16), and runs one
'weft agent --datapath linux' (or --datapath ebpf) in each host namespace,
enrolled like an operator would: a bootstrap token per host and the
controller's CA. The controller serves HTTPS and writes a cluster-admin
configuration, DATA-DIR/admin.config: the hints say which WEFT_CONFIG to
export so that 'weft get ...' in another shell talks to the demo. The agents
make a namespace per endpoint (wftdemo-hN-eHASH, its status.netns); the
linux data plane also a router namespace per VPC (wftdemo-hN-vVNI), the ebpf
one tc programs and BPF maps pinned under /sys/fs/bpf/weft.

When every endpoint is Ready it checks, with ICMP echo and TCP, that acme's
web-1 reaches acme's db-1 and globex's etl-1 reaches globex's wh-1 - db-1 and
wh-1 are both 10.0.2.10 - and that neither tenant reaches the other's, prints
what it checked and what to try, and runs until interrupted (Ctrl-C,
SIGTERM). Then it stops the agents, removes their data planes, and deletes
every namespace and link it made and its temporary directory - also when a
step fails half-way. Leftovers of a demo that was killed are removed by the
next one.`,
		Example: `  sudo weft demo
  sudo weft demo --hosts 4
  sudo weft demo --datapath ebpf
  sudo weft demo --no-wait     # check, print, clean up; exit 1 if a check failed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Hosts < 1 || cfg.Hosts > 200 {
				return usageErrorf("--hosts %d: want 1..200", cfg.Hosts)
			}
			if cfg.Datapath != demo.DatapathLinux && cfg.Datapath != demo.DatapathEBPF {
				return usageErrorf("--datapath %q: want %s or %s", cfg.Datapath, demo.DatapathLinux, demo.DatapathEBPF)
			}
			cfg.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 3, "number of hosts (namespaces h1..hN); the example's endpoints are spread over them")
	f.StringVar(&cfg.Datapath, "datapath", demo.DatapathLinux, "the agents' data plane: linux or ebpf")
	f.BoolVar(&cfg.Keep, "keep", false, "do not clean up on exit (for debugging; the next weft demo removes the leftovers)")
	f.BoolVar(&cfg.NoWait, "no-wait", false, "run the checks, print, clean up and exit (non-zero if a check failed)")
	return cmd
}
