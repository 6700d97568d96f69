package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/web"
)

// credentials are a replica's trust roots and the credentials it follows:
// the sealer of the cluster key, the CA, the API tokens and the host keys.
type credentials struct {
	log    *slog.Logger
	sealer *secrets.Sealer
	ca     *secrets.CA
	tokens *auth.Tokens
	keys   *hostkey.Keyring
}

// startCredentials loads (or, on a cluster's first start, creates) the
// cluster key and the CA, and starts following the tokens and host keys.
// On error it closes what it started.
func startCredentials(ctx context.Context, cfg Config, st *store.Store) (c *credentials, err error) {
	c = &credentials{log: cfg.Logger.With("subsystem", "controller")}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	key, created, err := secrets.LoadOrCreateKeyFile(cfg.ClusterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if created {
		c.log.Info("created the cluster key: give this file to every replica of the cluster, and keep a copy", "file", cfg.ClusterKeyFile)
	}
	if c.sealer, err = secrets.NewSealer(key); err != nil {
		return nil, err
	}
	var newCA bool
	if c.ca, newCA, err = secrets.LoadOrCreateCA(ctx, st.Client(), st.Key("ca/cert"), st.Key("secrets/ca"), c.sealer); err != nil {
		return nil, err
	}
	if newCA {
		c.log.Info("created the cluster CA")
	}
	if c.tokens, err = auth.NewTokens(auth.TokensConfig{Store: st, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err = c.tokens.Start(ctx); err != nil {
		return nil, err
	}
	c.keys = hostkey.NewKeyring(st, c.sealer, cfg.Logger)
	if err = c.keys.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close stops following; idempotent.
func (c *credentials) Close() error {
	var errs []error
	if c.keys != nil {
		errs = append(errs, c.keys.Close())
	}
	if c.tokens != nil {
		errs = append(errs, c.tokens.Close())
	}
	return errors.Join(errs...)
}

// serverTLS is the API's TLS configuration: the given certificate or one
// the CA issues for addr and the configured names; client certificates of
// the cluster CA (and of ClientCAFile) authenticate, if presented. HTTP/2
// is not offered: one connection per client keeps watches and limits
// per connection simple.
func (c *credentials) serverTLS(cfg Config, addr net.Addr) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	if cfg.TLSCertFile != "" {
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("API certificate: %w", err)
		}
	} else if cert, err = c.ca.ServingCert(servingNames(cfg, addr), time.Now()); err != nil {
		return nil, err
	}
	pool := c.ca.Pool()
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate in it", cfg.ClientCAFile)
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, NextProtos: []string{"http/1.1"},
	}, nil
}

// servingNames are the names and addresses a replica's issued certificate
// holds: its listen address (every local address if it listens on all),
// loopback, localhost, its host name and TLSSANs.
func servingNames(cfg Config, addr net.Addr) []string {
	names := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	if a, ok := addr.(*net.TCPAddr); ok {
		if !a.IP.IsUnspecified() {
			names = append(names, a.IP.String())
		} else if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range addrs {
				if n, ok := ia.(*net.IPNet); ok {
					names = append(names, n.IP.String())
				}
			}
		}
	}
	return append(names, cfg.TLSSANs...)
}

// writeAdminConfig writes, unless it exists, a CLI configuration at path
// with a new cluster-admin token and the CA, like kubeadm's admin.conf.
func (c *credentials) writeAdminConfig(ctx context.Context, path, server string) error {
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return err // exists (nil), or cannot tell
	}
	tok, err := c.tokens.Create(ctx, auth.TokenRequest{Scope: auth.Scope{Role: auth.RoleClusterAdmin}, Description: "admin.config"})
	if err != nil {
		return fmt.Errorf("admin config: %w", err)
	}
	x := clientconfig.Context{Name: "admin", Server: server, Token: tok.Secret}
	if strings.HasPrefix(server, "https:") {
		x.CertificateAuthorityData = clientconfig.EncodeCA(c.ca.CertPEM())
	} else {
		x.InsecureHTTP = true
	}
	cfg := clientconfig.New(path)
	cfg.SetContext(x)
	cfg.CurrentContext = x.Name
	if err := cfg.Save(); err != nil {
		return fmt.Errorf("admin config: %w", err)
	}
	c.log.Info("wrote a cluster-admin CLI configuration", "file", path)
	return nil
}

// webLogin checks the web UI's login tokens as the API checks bearer
// tokens (a refusal is a 401).
type webLogin struct{ a *auth.Authenticator }

func (l webLogin) Authenticate(_ context.Context, token string) (web.Identity, error) {
	id, err := l.a.Token(token)
	if err != nil {
		return web.Identity{}, err
	}
	return web.Identity{Subject: id.Subject, Role: id.Role, Tenant: id.Tenant}, nil
}
