package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/controller/backup"
)

func newRestoreCmd() *cobra.Command {
	var (
		cfg        backup.RestoreConfig
		passphrase string
	)
	cmd := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Restore a backup into a new data dir",
		Long: `Restore a backup made by 'weft backup' into DIR, which must hold no etcd data,
and write the cluster key there (or to --cluster-key-file). A controller
started on DIR serves every object of the backup; its agents, which connect
to it as before, reconcile their hosts with the restored state without
touching what did not change. The restored etcd is a new cluster whose
revisions continue above the backup's.

Embedded HA: restore every member from the same file, each with its own
--etcd-name and --etcd-peer-listen and the same --etcd-initial-cluster, then
start their controllers with those flags.`,
		Example: `  weft restore weft.backup --data-dir /var/lib/weft-restored
  weft controller --data-dir /var/lib/weft-restored`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.DataDir == "" {
				return usageErrorf("--data-dir is required")
			}
			if (cfg.Name == "") != (cfg.PeerURL == "") {
				return usageErrorf("give both --etcd-name and --etcd-peer-listen, or neither")
			}
			lock, err := readLock(passphrase)
			if err != nil {
				return err
			}
			cfg.Passphrase = lock.Passphrase
			meta, err := backup.Restore(args[0], cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored cluster %s at revision %d (taken %s) into %s\n", meta.ClusterID, meta.Revision,
				meta.Created.Format("2006-01-02 15:04:05 MST"), cfg.DataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "the new data dir (required)")
	f.StringVar(&cfg.ClusterKeyFile, "cluster-key-file", "", "where to write the cluster key (default DATA-DIR/cluster.key)")
	f.StringVar(&passphrase, "passphrase-file", "", "the passphrase of an encrypted backup (first line of this file)")
	f.StringVar(&cfg.Name, "etcd-name", "", "embedded HA: this member's name")
	f.StringVar(&cfg.PeerURL, "etcd-peer-listen", "", "embedded HA: this member's peer URL")
	f.StringVar(&cfg.InitialCluster, "etcd-initial-cluster", "", "embedded HA: every restored member, NAME=PEER-URL,...")
	return cmd
}
