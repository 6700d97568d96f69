package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/wire"
)

// credentialsFile is the file in the agent's state directory that holds
// its credentials once enrolled.
const credentialsFile = "credentials"

// hostCredentials are an enrolled agent's credentials: its southbound key,
// its API token, the CA and the API it enrolled with.
type hostCredentials struct {
	Host   string `json:"host"`
	Server string `json:"server"`
	client.Enrollment
}

// loadCredentials reads dir's credentials file; nil if there is none.
func loadCredentials(dir string) (*hostCredentials, error) {
	path := filepath.Join(dir, credentialsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent credentials: %w", err)
	}
	var c hostCredentials
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("agent credentials %s: %w", path, err)
	}
	if _, err := c.key(); err != nil {
		return nil, fmt.Errorf("agent credentials %s: %w", path, err)
	}
	return &c, nil
}

// key returns the host's southbound key.
func (c *hostCredentials) key() ([]byte, error) {
	key, err := hex.DecodeString(c.HostKey)
	if err != nil || len(key) != wire.KeySize {
		return nil, fmt.Errorf("host key: want %d hex digits", 2*wire.KeySize)
	}
	return key, nil
}

// credentials returns the agent's credentials: those stored in the state
// directory, else new ones from enrolling with the bootstrap token (then
// stored, mode 0600).
func (o *agentOptions) credentials(ctx context.Context, stateDir string, stdout io.Writer) (*hostCredentials, error) {
	creds, err := loadCredentials(stateDir)
	if err != nil {
		return nil, err
	}
	if creds != nil {
		if creds.Host != o.host {
			return nil, fmt.Errorf("%s holds the credentials of host %q, not %q: use another --state-dir", filepath.Join(stateDir, credentialsFile), creds.Host, o.host)
		}
		return creds, nil
	}
	if o.bootstrapTokenFile == "" || o.api == "" {
		return nil, usageErrorf("host %s is not enrolled yet (no %s): its first start needs --bootstrap-token-file (from 'weft token create --role bootstrap --host %s') and --api",
			o.host, filepath.Join(stateDir, credentialsFile), o.host)
	}
	token, err := clientconfig.ReadToken(o.bootstrapTokenFile)
	if err != nil {
		return nil, fmt.Errorf("--bootstrap-token-file: %w", err)
	}
	ca, err := o.enrolmentCA(ctx)
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithToken(token), client.WithTimeout(30 * time.Second)}
	if ca != nil {
		opts = append(opts, client.WithCA(ca))
	}
	cl, err := client.New(o.api, opts...)
	if err != nil {
		return nil, usageErrorf("--api: %v", err)
	}
	defer cl.Close()
	e, err := cl.Enroll(ctx, client.EnrollRequest{Host: o.host, UnderlayIP: o.underlayIP})
	if err != nil {
		return nil, err
	}
	creds = &hostCredentials{Host: o.host, Server: cl.Server(), Enrollment: *e}
	if _, err := creds.key(); err != nil {
		return nil, fmt.Errorf("enrol host %s: %w", o.host, err)
	}
	data, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("agent credentials: %w", err)
	}
	if err := clientconfig.WriteFile(filepath.Join(stateDir, credentialsFile), data); err != nil {
		return nil, fmt.Errorf("agent credentials: %w", err)
	}
	fmt.Fprintf(stdout, "weft agent %s: enrolled with %s (Host UID %s); credentials kept in %s\n", o.host, creds.Server, creds.HostUID, filepath.Join(stateDir, credentialsFile))
	return creds, nil
}

// enrolmentCA is the CA that enrolment trusts: --ca-file, or the CA the
// controller serves if its fingerprint is --ca-sha256; nil (the system's
// roots) without either.
func (o *agentOptions) enrolmentCA(ctx context.Context) ([]byte, error) {
	switch {
	case o.caFile != "" && o.caSHA256 != "":
		return nil, usageErrorf("give --ca-file or --ca-sha256, not both")
	case o.caFile != "":
		return readCAFile(o.caFile)
	case o.caSHA256 != "":
		fp, err := parseFingerprint(o.caSHA256)
		if err != nil {
			return nil, usageErrorf("--ca-sha256: %v", err)
		}
		return client.PinnedCA(ctx, o.api, fp)
	}
	return nil, nil
}

// apiClient returns the client of the agent's API calls (registering the
// Host, reporting endpoints): its token, and the CA of --ca-file or of
// enrolment.
func (o *agentOptions) apiClient(creds *hostCredentials) (*client.Client, error) {
	server := o.api
	if server == "" {
		server = creds.Server
	}
	if err := o.checkPlainHTTP(server); err != nil {
		return nil, err
	}
	ca := []byte(creds.CA)
	if o.caFile != "" {
		var err error
		if ca, err = readCAFile(o.caFile); err != nil {
			return nil, err
		}
	}
	opts := []client.Option{client.WithToken(creds.Token)}
	if len(ca) > 0 {
		opts = append(opts, client.WithCA(ca))
	}
	cl, err := client.New(server, opts...)
	if err != nil {
		return nil, usageErrorf("--api: %v", err)
	}
	return cl, nil
}

// checkPlainHTTP refuses an http:// API without --insecure-http.
func (o *agentOptions) checkPlainHTTP(server string) error {
	if strings.HasPrefix(server, "http://") && !o.insecureHTTP {
		return usageErrorf("--api %s is plain HTTP: use https, or allow it with --insecure-http", server)
	}
	return nil
}
