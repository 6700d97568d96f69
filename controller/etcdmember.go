package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
)

// member reports whether the replica's embedded etcd is a member of a
// cluster of several (embedded HA) rather than a single member.
func (c *Config) member() bool { return c.EtcdPeerListen != "" }

// validateMember checks the options of an embedded cluster member.
func (c *Config) validateMember() error {
	if !c.member() {
		if c.EtcdName != "" || c.EtcdInitialCluster != "" || c.EtcdClientListen != "" || c.EtcdJoin != "" || c.EtcdExisting {
			return errors.New("controller: etcd member options (name, initial cluster, client listen, join) need an etcd peer URL")
		}
		return nil
	}
	switch {
	case len(c.EtcdEndpoints) > 0:
		return errors.New("controller: an embedded etcd member (peer URL) and external etcd endpoints exclude each other")
	case c.DataDir == "":
		return errors.New("controller: an embedded etcd member needs a data dir")
	case c.EtcdName == "":
		return errors.New("controller: an embedded etcd member needs a name")
	case c.EtcdJoin != "" && (c.EtcdInitialCluster != "" || c.EtcdExisting):
		return errors.New("controller: join a cluster, or give its initial members, not both")
	}
	for _, u := range append([]string{c.EtcdPeerListen, c.EtcdClientListen}, splitList(c.EtcdJoin)...) {
		if p, err := url.Parse(u); u != "" && (err != nil || p.Scheme != "https" || p.Port() == "") {
			return fmt.Errorf("controller: etcd URL %q: want https://HOST:PORT", u)
		}
	}
	return nil
}

// memberConfig is the embedded member's configuration: its TLS files,
// issued from the cluster key's etcd CA into DATA-DIR/etcd-tls, and its
// cluster — after adding it to a running one if it joins.
func (c *Controller) memberConfig(ctx context.Context) (*store.MemberConfig, error) {
	cfg := c.cfg
	key, err := c.memberClusterKey()
	if err != nil {
		return nil, err
	}
	ca, err := secrets.EtcdCA(key)
	if err != nil {
		return nil, err
	}
	sans := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil {
		sans = append(sans, h)
	}
	for _, u := range []string{cfg.EtcdPeerListen, cfg.EtcdClientListen} {
		if p, err := url.Parse(u); err == nil && u != "" {
			sans = append(sans, p.Hostname())
		}
	}
	files, err := ca.WriteMemberFiles(filepath.Join(cfg.DataDir, "etcd-tls"), cfg.EtcdName, sans, time.Now())
	if err != nil {
		return nil, err
	}
	m := &store.MemberConfig{
		Name: cfg.EtcdName, PeerURL: cfg.EtcdPeerListen, ClientURL: cfg.EtcdClientListen,
		InitialCluster: cfg.EtcdInitialCluster, Existing: cfg.EtcdExisting,
		CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile,
	}
	if cfg.EtcdJoin != "" && !hasMemberData(cfg.DataDir) {
		if m.InitialCluster, err = c.join(ctx, ca); err != nil {
			return nil, err
		}
		m.Existing = true
	}
	return m, nil
}

// memberClusterKey reads the cluster key, which the member's TLS derives
// from. Only the first member of a new cluster may create it: the members
// of one cluster must share it before any of them runs.
func (c *Controller) memberClusterKey() ([]byte, error) {
	path := c.cfg.ClusterKeyFile
	if c.cfg.EtcdJoin != "" || c.cfg.EtcdExisting || len(splitList(c.cfg.EtcdInitialCluster)) > 1 {
		key, err := secrets.ReadKeyFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("controller: cluster key %s: missing: every member of an etcd cluster needs the same cluster key file (copy it from a running replica, or create one for a new cluster with 'umask 077; openssl rand -hex 32 > FILE')", path)
		}
		if err != nil {
			return nil, fmt.Errorf("controller: cluster key: %w", err)
		}
		return key, nil
	}
	key, created, err := secrets.LoadOrCreateKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("controller: cluster key: %w", err)
	}
	if created {
		c.log.Info("created the cluster key: give this file to every replica of the cluster, and keep a copy", "file", path)
	}
	return key, nil
}

// hasMemberData reports whether dir holds an etcd member's data (then the
// member restarts with it, whatever the options say about the cluster).
func hasMemberData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

// join adds this replica's member to the cluster of the members at
// EtcdJoin, as a learner (it counts towards no quorum until it has caught
// up and promotes itself), and returns the initial cluster to start it
// with. A member already added with this peer URL (a join that failed
// after the add) is taken as it is. The strict reconfiguration check
// refuses changes for a few seconds after a member starts: those are
// retried until ctx ends.
func (c *Controller) join(ctx context.Context, ca *secrets.CA) (string, error) {
	tc, err := ca.ClientTLS(c.cfg.EtcdName, time.Now())
	if err != nil {
		return "", err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: splitList(c.cfg.EtcdJoin), TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", fmt.Errorf("controller: join %s: %w", c.cfg.EtcdJoin, err)
	}
	defer cli.Close()
	peer := c.cfg.EtcdPeerListen
	for {
		list, err := cli.MemberList(ctx)
		if err != nil {
			return "", fmt.Errorf("controller: join %s: list members: %w", c.cfg.EtcdJoin, err)
		}
		members := list.Members
		i := slices.IndexFunc(members, func(m *etcdserverpb.Member) bool { return slices.Contains(m.PeerURLs, peer) })
		if i < 0 {
			add, err := cli.MemberAddAsLearner(ctx, []string{peer})
			if errors.Is(err, rpctypes.ErrGRPCUnhealthy) || errors.Is(err, rpctypes.ErrUnhealthy) {
				c.log.Info("etcd cluster not ready for a new member yet; retrying", "join", c.cfg.EtcdJoin)
				select {
				case <-ctx.Done():
					return "", fmt.Errorf("controller: join %s: %w", c.cfg.EtcdJoin, ctx.Err())
				case <-time.After(time.Second):
				}
				continue
			}
			if err != nil {
				return "", fmt.Errorf("controller: join %s: add member %s: %w", c.cfg.EtcdJoin, peer, err)
			}
			members = add.Members
			c.log.Info("added this replica's etcd member to the cluster as a learner", "name", c.cfg.EtcdName, "peer", peer, "id", fmt.Sprintf("%x", add.Member.ID))
		}
		var initial []string
		for _, m := range members {
			name := m.Name
			if slices.Contains(m.PeerURLs, peer) {
				name = c.cfg.EtcdName
			}
			for _, u := range m.PeerURLs {
				initial = append(initial, name+"="+u)
			}
		}
		return strings.Join(initial, ","), nil
	}
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
