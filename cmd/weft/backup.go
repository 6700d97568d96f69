package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/backup"
)

func newBackupCmd() *cobra.Command {
	var (
		access          etcdAccess
		out, passphrase string
	)
	cmd := &cobra.Command{
		Use:   "backup -o FILE",
		Short: "Back up the cluster: an etcd snapshot and the cluster key, in one private file",
		Long: `Write a backup of the cluster to FILE (mode 0600): a snapshot of etcd, taken
from the member reached, and the cluster key, without which the secrets in the
snapshot (the CA's key, the host keys) do not open. With --passphrase-file the
file is encrypted (AES-256-GCM, key from the passphrase by PBKDF2). Keep it as
you keep the cluster key. 'weft restore' brings it back.`,
		Example: `  weft backup -o weft-$(date +%F).backup --data-dir /var/lib/weft
  weft backup -o weft.backup --passphrase-file pass.txt \
      --etcd-endpoints https://10.0.0.1:2379 --cluster-key-file /etc/weft/cluster.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf("-o FILE is required")
			}
			key, err := access.clusterKey()
			if err != nil {
				return fmt.Errorf("cluster key: %w", err)
			}
			lock, err := readLock(passphrase)
			if err != nil {
				return err
			}
			start := time.Now()
			var meta backup.Meta
			err = withEtcdFor(cmd.Context(), &access, 30*time.Minute, func(ctx context.Context, cli *clientv3.Client) error {
				meta, err = backup.WriteFile(ctx, out, cli, key, lock)
				return err
			})
			if err != nil {
				return err
			}
			fi, err := os.Stat(out)
			if err != nil {
				return err
			}
			enc := "not encrypted"
			if meta.Encryption != nil {
				enc = "encrypted"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %s): cluster %s at revision %d, members %s, in %s\n", out, bytesOf(fi.Size()), enc,
				meta.ClusterID, meta.Revision, strings.Join(meta.Members, ","), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	access.register(cmd.Flags())
	cmd.Flags().StringVarP(&out, "output", "o", "", "the backup file to write")
	cmd.Flags().StringVar(&passphrase, "passphrase-file", "", "encrypt with the passphrase in this file (its first line)")
	return cmd
}

// readLock reads a passphrase file (its first line).
func readLock(path string) (backup.Lock, error) {
	if path == "" {
		return backup.Lock{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return backup.Lock{}, fmt.Errorf("passphrase: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimRight(line, "\r"); line == "" {
		return backup.Lock{}, fmt.Errorf("passphrase file %s: empty first line", path)
	}
	return backup.Lock{Passphrase: []byte(line)}, nil
}

// withEtcdFor is withEtcd bounded to d.
func withEtcdFor(ctx context.Context, access *etcdAccess, d time.Duration, f func(context.Context, *clientv3.Client) error) error {
	cli, err := access.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx, cli)
}
