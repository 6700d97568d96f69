// Package clientconfig reads and writes the configuration file of weft's
// clients (the weft CLI): a kubeconfig-like list of named contexts, each
// saying which controller to talk to (server URL), which CA to trust for
// its certificate, which credential to present (a bearer token or a client
// certificate) and which tenant to use by default; one context is current.
//
//	apiVersion: weft/v1
//	kind: Config
//	currentContext: lab
//	contexts:
//	- name: lab
//	  server: https://127.0.0.1:7443
//	  certificateAuthorityData: <base64 of the CA's PEM>   # or certificateAuthority: ca.pem
//	  token: weft_…                                       # or tokenFile:, or clientCertificate: + clientKey:
//	  tenant: acme
//
// The file is $WEFT_CONFIG, else ~/.config/weft/config (DefaultPath).
// Relative file names in a context are relative to the file's directory.
// Resolve turns the file and the command line's overrides into the
// Settings of one client; Settings.NewClient makes it. Save writes the file
// with mode 0600: it holds credentials.
package clientconfig

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/client"
)

// The file's apiVersion and kind.
const (
	APIVersion = "weft/v1"
	Kind       = "Config"
)

// EnvPath is the environment variable that names the file.
const EnvPath = "WEFT_CONFIG"

// Config is the content of a configuration file.
type Config struct {
	APIVersion     string    `json:"apiVersion"`
	Kind           string    `json:"kind"`
	CurrentContext string    `json:"currentContext,omitempty"`
	Contexts       []Context `json:"contexts,omitempty"`

	path string // the file it was loaded from (Save writes it)
}

// Context is one named way to reach a controller.
type Context struct {
	Name string `json:"name"`
	// Server is the controller's API URL, e.g. https://10.0.0.1:7443.
	Server string `json:"server,omitempty"`
	// CertificateAuthority is a PEM file of the CA that signs the
	// controller's certificate; CertificateAuthorityData the PEM itself,
	// base64-encoded. At most one of them. Neither: the system's roots.
	CertificateAuthority     string `json:"certificateAuthority,omitempty"`
	CertificateAuthorityData string `json:"certificateAuthorityData,omitempty"`
	// Token is a bearer token (weft_…); TokenFile a file holding one. At
	// most one of them.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
	// ClientCertificate and ClientKey are PEM files of a client
	// certificate from the weft CA and its key; both or neither.
	ClientCertificate string `json:"clientCertificate,omitempty"`
	ClientKey         string `json:"clientKey,omitempty"`
	// Tenant is the default tenant of tenant-scoped kinds.
	Tenant string `json:"tenant,omitempty"`
	// InsecureHTTP allows a plain http:// server (like --insecure-http).
	InsecureHTTP bool `json:"insecureHTTP,omitempty"`
}

// DefaultPath returns the file's path: $WEFT_CONFIG, else
// $XDG_CONFIG_HOME/weft/config, else $HOME/.config/weft/config. getenv
// reads the environment (os.Getenv).
func DefaultPath(getenv func(string) string) (string, error) {
	if p := getenv(EnvPath); p != "" {
		return p, nil
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "weft", "config"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "weft", "config"), nil
	}
	return "", fmt.Errorf("clientconfig: no $%s, $XDG_CONFIG_HOME or $HOME to find the configuration file in", EnvPath)
}

// New returns an empty Config that Save writes to path.
func New(path string) *Config { return &Config{APIVersion: APIVersion, Kind: Kind, path: path} }

// Load reads the file at path. A file that does not exist gives an empty
// Config (Save creates it).
func Load(path string) (*Config, error) {
	c := New(path)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clientconfig: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", path, err)
	}
	return c, nil
}

// LoadSettings reads the file at path, which must exist and hold a current
// context (as DATA-DIR/admin.config of a controller does), and resolves it
// without overrides.
func LoadSettings(path string) (*Settings, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("clientconfig: %w", err)
	}
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	if c.CurrentContext == "" {
		return nil, fmt.Errorf("clientconfig: %s has no current context", path)
	}
	return c.Resolve(Overrides{})
}

// Path returns the file the Config was loaded from.
func (c *Config) Path() string { return c.path }

func (c *Config) validate() error {
	if c.APIVersion != APIVersion || c.Kind != Kind {
		return fmt.Errorf("apiVersion %q, kind %q: want %s %s", c.APIVersion, c.Kind, APIVersion, Kind)
	}
	seen := map[string]bool{}
	for i, x := range c.Contexts {
		if x.Name == "" {
			return fmt.Errorf("contexts[%d]: no name", i)
		}
		if seen[x.Name] {
			return fmt.Errorf("contexts[%d]: a second context named %q", i, x.Name)
		}
		seen[x.Name] = true
	}
	return nil
}

// Save writes the Config to its file (mode 0600, replacing the old file
// atomically), making the directory (0700) if needed.
func (c *Config) Save() error {
	if c.path == "" {
		return errors.New("clientconfig: save: no file name")
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("clientconfig: save %s: %w", c.path, err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("clientconfig: save %s: %w", c.path, err)
	}
	return WriteFile(c.path, data)
}

// WriteFile writes a file that holds secrets: mode 0600, the directory
// (made 0700 if missing) never holding a partial file.
func WriteFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("clientconfig: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("clientconfig: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("clientconfig: write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	return nil
}

// Context returns the context named name.
func (c *Config) Context(name string) (Context, bool) {
	i := slices.IndexFunc(c.Contexts, func(x Context) bool { return x.Name == name })
	if i < 0 {
		return Context{}, false
	}
	return c.Contexts[i], true
}

// SetContext adds x, or replaces the context of the same name.
func (c *Config) SetContext(x Context) {
	if i := slices.IndexFunc(c.Contexts, func(y Context) bool { return y.Name == x.Name }); i >= 0 {
		c.Contexts[i] = x
		return
	}
	c.Contexts = append(c.Contexts, x)
}

// UseContext makes the context named name the current one.
func (c *Config) UseContext(name string) error {
	if _, ok := c.Context(name); !ok {
		return c.notFound(name)
	}
	c.CurrentContext = name
	return nil
}

func (c *Config) notFound(name string) error {
	names := make([]string, len(c.Contexts))
	for i, x := range c.Contexts {
		names[i] = x.Name
	}
	known := "it has none"
	if len(names) > 0 {
		known = "it has " + strings.Join(names, ", ")
	}
	return fmt.Errorf("clientconfig: no context %q in %s (%s)", name, c.path, known)
}

// EncodeCA returns the certificateAuthorityData of a CA's PEM.
func EncodeCA(pem []byte) string { return base64.StdEncoding.EncodeToString(pem) }

// Redacted returns a copy whose tokens and CA data are replaced by
// placeholders, for printing.
func (c *Config) Redacted() *Config {
	cp := *c
	cp.Contexts = slices.Clone(c.Contexts)
	for i := range cp.Contexts {
		x := &cp.Contexts[i]
		if x.Token != "" {
			x.Token = "REDACTED"
		}
		if x.CertificateAuthorityData != "" {
			x.CertificateAuthorityData = "DATA+OMITTED"
		}
	}
	return &cp
}

// Overrides are what the command line (flags, then environment) says
// over the file's contexts.
type Overrides struct {
	// Context picks a context instead of the current one.
	Context string
	// Server and Tenant replace the context's.
	Server, Tenant string
	// InsecureHTTP allows a plain http:// server.
	InsecureHTTP bool
}

// Settings are what one client uses, resolved from the file and the
// overrides.
type Settings struct {
	// Context is the name of the context used; "" if none.
	Context string
	// Server is the API's URL, with its scheme.
	Server string
	// Tenant is the default tenant ("" none).
	Tenant string
	// CA is the PEM of the CA to trust (nil: the system's roots).
	CA []byte
	// Token is the bearer token ("" none).
	Token string
	// Certificate is the client certificate (nil none).
	Certificate *tls.Certificate
	// InsecureHTTP is set when plain HTTP was allowed.
	InsecureHTTP bool
}

// Resolve returns the settings of the context o.Context names, else of
// the current context, else of none (client.DefaultServer, no
// credential), with the overrides applied. A server without a scheme gets
// https:// (http:// with InsecureHTTP); an http:// server is an error
// unless o or the context allows plain HTTP. It reads the files the
// context names.
func (c *Config) Resolve(o Overrides) (*Settings, error) {
	var x Context
	name := o.Context
	if name == "" {
		name = c.CurrentContext
	}
	if name != "" {
		var ok bool
		if x, ok = c.Context(name); !ok {
			return nil, c.notFound(name)
		}
	}
	s := &Settings{Context: name, Server: x.Server, Tenant: x.Tenant, InsecureHTTP: o.InsecureHTTP || x.InsecureHTTP}
	if o.Server != "" {
		s.Server = o.Server
	}
	if o.Tenant != "" {
		s.Tenant = o.Tenant
	}
	if s.Server == "" {
		s.Server = client.DefaultServer
	}
	var err error
	if s.Server, err = checkServer(s.Server, s.InsecureHTTP); err != nil {
		return nil, err
	}
	what := "context " + name
	if s.CA, err = x.ca(c.dir()); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", what, err)
	}
	if s.Token, err = x.token(c.dir()); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", what, err)
	}
	if s.Certificate, err = x.certificate(c.dir()); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", what, err)
	}
	return s, nil
}

// checkServer gives server a scheme and refuses plain HTTP unless allowed.
func checkServer(server string, insecure bool) (string, error) {
	if !strings.Contains(server, "://") {
		scheme := "https://"
		if insecure {
			scheme = "http://"
		}
		return scheme + server, nil
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("clientconfig: server %q: %w", server, err)
	}
	if u.Scheme == "http" && !insecure {
		return "", fmt.Errorf("clientconfig: server %s is plain HTTP: credentials and objects would cross the network in clear text; "+
			"use https, or allow it with --insecure-http (insecureHTTP: true in a context)", server)
	}
	return server, nil
}

func (c *Config) dir() string { return filepath.Dir(c.path) }

// file returns name relative to dir unless absolute.
func file(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

func (x Context) ca(dir string) ([]byte, error) {
	switch {
	case x.CertificateAuthority != "" && x.CertificateAuthorityData != "":
		return nil, errors.New("give certificateAuthority or certificateAuthorityData, not both")
	case x.CertificateAuthorityData != "":
		pem, err := base64.StdEncoding.DecodeString(x.CertificateAuthorityData)
		if err != nil {
			return nil, fmt.Errorf("certificateAuthorityData: %w", err)
		}
		return pem, nil
	case x.CertificateAuthority != "":
		pem, err := os.ReadFile(file(dir, x.CertificateAuthority))
		if err != nil {
			return nil, fmt.Errorf("certificateAuthority: %w", err)
		}
		return pem, nil
	}
	return nil, nil
}

func (x Context) token(dir string) (string, error) {
	switch {
	case x.Token != "" && x.TokenFile != "":
		return "", errors.New("give token or tokenFile, not both")
	case x.TokenFile != "":
		return ReadToken(file(dir, x.TokenFile))
	}
	return x.Token, nil
}

// ReadToken reads a token file: the token, surrounding white space ignored.
func ReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := string(bytes.TrimSpace(data))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: want one token", path)
	}
	return tok, nil
}

func (x Context) certificate(dir string) (*tls.Certificate, error) {
	if (x.ClientCertificate == "") != (x.ClientKey == "") {
		return nil, errors.New("give both clientCertificate and clientKey, or neither")
	}
	if x.ClientCertificate == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(file(dir, x.ClientCertificate), file(dir, x.ClientKey))
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &cert, nil
}

// ClientOptions are the client options of the settings: the CA, the
// token, the certificate.
func (s *Settings) ClientOptions() []client.Option {
	var opts []client.Option
	if s.CA != nil {
		opts = append(opts, client.WithCA(s.CA))
	}
	if s.Token != "" {
		opts = append(opts, client.WithToken(s.Token))
	}
	if s.Certificate != nil {
		opts = append(opts, client.WithClientCertificate(*s.Certificate))
	}
	return opts
}

// NewClient returns a client of the settings; opts come after the
// settings' own options.
func (s *Settings) NewClient(opts ...client.Option) (*client.Client, error) {
	return client.New(s.Server, append(s.ClientOptions(), opts...)...)
}
