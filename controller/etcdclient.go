package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftnet/weft/controller/secrets"
)

// validateEtcd checks the options of an external etcd cluster.
func (c *Config) validateEtcd() error {
	withTLS := c.EtcdCACert != "" || c.EtcdCert != "" || c.EtcdKey != ""
	switch {
	case len(c.EtcdEndpoints) == 0 && (withTLS || c.EtcdUser != "" || c.EtcdPassword != ""):
		return errors.New("controller: etcd TLS files and users are for an external etcd cluster (etcd endpoints)")
	case (c.EtcdCert == "") != (c.EtcdKey == ""):
		return errors.New("controller: give both an etcd client certificate and its key, or neither")
	case c.EtcdPassword != "" && c.EtcdUser == "":
		return errors.New("controller: an etcd password without a user")
	}
	for _, e := range c.EtcdEndpoints {
		if withTLS && strings.HasPrefix(e, "http://") {
			return fmt.Errorf("controller: etcd endpoint %s is plain HTTP: with TLS files, use https://", e)
		}
	}
	return nil
}

// EtcdClientConfig is the etcd client configuration of a tool that acts
// on a cluster's etcd (weft etcd, weft backup), from a replica's options:
// EtcdEndpoints with the TLS a replica would use, or, without endpoints,
// the unix socket of the embedded etcd in DataDir.
func EtcdClientConfig(cfg Config) (clientv3.Config, error) {
	if cfg.ClusterKeyFile == "" && cfg.DataDir != "" {
		cfg.ClusterKeyFile = filepath.Join(cfg.DataDir, "cluster.key")
	}
	if len(cfg.EtcdEndpoints) > 0 {
		return etcdClientConfig(cfg)
	}
	if cfg.DataDir == "" {
		return clientv3.Config{}, errors.New("controller: etcd client: give a data dir or etcd endpoints")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return clientv3.Config{}, fmt.Errorf("controller: etcd client: %w", err)
	}
	sock := filepath.Join(dir, "etcd.sock")
	if _, err := os.Stat(sock); err != nil {
		return clientv3.Config{}, fmt.Errorf("controller: etcd client: no embedded etcd socket in %s (is the controller running? with a long data dir path, use the etcd endpoints): %w", dir, err)
	}
	return clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}, nil
}

// etcdClientConfig is the client configuration of the external etcd
// cluster: its endpoints, TLS (verifying the members against EtcdCACert,
// presenting EtcdCert) and user. Without TLS files, https:// endpoints are
// taken for the client URLs of embedded members (EtcdClientListen): the
// replica trusts them and authenticates with the etcd CA of its cluster
// key.
func etcdClientConfig(cfg Config) (clientv3.Config, error) {
	ec := clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 5 * time.Second, Username: cfg.EtcdUser, Password: cfg.EtcdPassword}
	if cfg.EtcdCACert == "" && cfg.EtcdCert == "" {
		if !slices.ContainsFunc(cfg.EtcdEndpoints, func(e string) bool { return strings.HasPrefix(e, "https://") }) {
			return ec, nil
		}
		key, err := secrets.ReadKeyFile(cfg.ClusterKeyFile)
		if err != nil {
			return ec, fmt.Errorf("etcd client certificate from the cluster key: %w", err)
		}
		ca, err := secrets.EtcdCA(key)
		if err != nil {
			return ec, err
		}
		ec.TLS, err = ca.ClientTLS("weft controller", time.Now())
		return ec, err
	}
	ec.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.EtcdCACert != "" {
		pem, err := os.ReadFile(cfg.EtcdCACert)
		if err != nil {
			return ec, fmt.Errorf("etcd CA: %w", err)
		}
		ec.TLS.RootCAs = x509.NewCertPool()
		if !ec.TLS.RootCAs.AppendCertsFromPEM(pem) {
			return ec, fmt.Errorf("etcd CA %s: no PEM certificate in it", cfg.EtcdCACert)
		}
	}
	if cfg.EtcdCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.EtcdCert, cfg.EtcdKey)
		if err != nil {
			return ec, fmt.Errorf("etcd client certificate: %w", err)
		}
		ec.TLS.Certificates = []tls.Certificate{cert}
	}
	return ec, nil
}
