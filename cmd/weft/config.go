package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/client/clientconfig"
)

func (a *app) newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and edit the configuration file (contexts: controller, CA, credential, tenant)",
		Long: `Show and edit weft's configuration file: $WEFT_CONFIG, else
~/.config/weft/config. It lists contexts, each naming a controller (server),
the CA that signs its certificate, a credential (a token or a client
certificate) and a default tenant; one context is current. 'weft login'
writes a context after checking it; 'weft controller' writes one for its
cluster-admin to DATA-DIR/admin.config.

Flags beat the environment, which beats the context: --server/$WEFT_SERVER,
--tenant/$WEFT_TENANT; --context picks a context for one command.`,
		Example: `  weft config get-contexts
  weft config use-context acme
  weft config set-context acme --server https://10.0.0.1:7443 --ca-file ca.pem --token-file acme.token --tenant acme
  weft config view`,
	}
	cmd.AddCommand(a.newConfigViewCmd(), a.newConfigGetContextsCmd(), a.newConfigUseContextCmd(), a.newConfigSetContextCmd())
	return cmd
}

// loadConfig loads the configuration file for editing or printing.
func (a *app) loadConfig() (*clientconfig.Config, error) {
	path, err := clientconfig.DefaultPath(a.env.getenv)
	if err != nil {
		return nil, err
	}
	return clientconfig.Load(path)
}

func (a *app) newConfigViewCmd() *cobra.Command {
	var (
		raw    bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "view",
		Short: "Print the configuration file (tokens and CA data redacted unless --raw)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != formatYAML && output != formatJSON {
				return usageErrorf("-o %q: want yaml or json", output)
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if !raw {
				cfg = cfg.Redacted()
			}
			data, err := marshalValue(cfg, output)
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(data)
			return err
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print tokens and CA data as they are")
	cmd.Flags().StringVarP(&output, "output", "o", formatYAML, "output format: yaml or json")
	return cmd
}

func (a *app) newConfigGetContextsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if len(cfg.Contexts) == 0 {
				fmt.Fprintf(a.stderr, "No contexts in %s (write one with 'weft login' or 'weft config set-context').\n", cfg.Path())
				return nil
			}
			rows := make([][]string, 0, len(cfg.Contexts))
			for _, x := range cfg.Contexts {
				cur := ""
				if x.Name == cfg.CurrentContext {
					cur = "*"
				}
				rows = append(rows, []string{cur, x.Name, orNone(x.Server), orNone(x.Tenant), credentialOf(x)})
			}
			return writeTable(a.stdout, []string{"CURRENT", "NAME", "SERVER", "TENANT", "CREDENTIAL"}, rows)
		},
	}
}

// credentialOf says which credential a context holds.
func credentialOf(x clientconfig.Context) string {
	switch {
	case x.Token != "":
		if id, _, ok := strings.Cut(strings.TrimPrefix(x.Token, "weft_"), "_"); ok {
			return "token " + id
		}
		return "token"
	case x.TokenFile != "":
		return "token file " + x.TokenFile
	case x.ClientCertificate != "":
		return "certificate " + x.ClientCertificate
	}
	return none
}

func (a *app) newConfigUseContextCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make NAME the current context",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.UseContext(args[0]); err != nil {
				return err
			}
			if err := cfg.Save(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Switched to context %q.\n", args[0])
			return nil
		},
	}
}

func (a *app) newConfigSetContextCmd() *cobra.Command {
	var creds credentialFlags
	cmd := &cobra.Command{
		Use:   "set-context NAME",
		Short: "Create or change the context NAME",
		Long: `Create the context NAME, or change the fields given on the command line:
--server, --tenant, --insecure-http, and the files of the CA (--ca-file, whose
certificate is copied into the context), of a token (--token-file, read at
each use) or of a client certificate and its key (--client-certificate,
--client-key). A token replaces a certificate and the other way round. The
first context of the file becomes the current one.`,
		Example: `  weft config set-context acme --server https://10.0.0.1:7443 --ca-file ca.pem --token-file acme.token --tenant acme
  weft config set-context alice --client-certificate alice.crt --client-key alice.key`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			x, _ := cfg.Context(args[0])
			x.Name = args[0]
			f := cmd.Flags()
			if f.Changed("server") {
				x.Server = a.flagServer
			}
			if f.Changed("tenant") {
				x.Tenant = a.flagTenant
			}
			if f.Changed("insecure-http") {
				x.InsecureHTTP = a.insecureHTTP
			}
			if err := creds.apply(&x, false); err != nil {
				return err
			}
			cfg.SetContext(x)
			if cfg.CurrentContext == "" {
				cfg.CurrentContext = x.Name
			}
			// Check that the context resolves (its files read) before writing it.
			if _, err := cfg.Resolve(clientconfig.Overrides{Context: x.Name}); err != nil {
				return err
			}
			if err := cfg.Save(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Context %q written to %s.\n", x.Name, cfg.Path())
			return nil
		},
	}
	creds.register(cmd, "file holding the context's token (read at each use)")
	return cmd
}

// credentialFlags give a context its CA and its credential.
type credentialFlags struct {
	caFile, tokenFile, certFile, keyFile string
}

func (c *credentialFlags) register(cmd *cobra.Command, tokenHelp string) {
	f := cmd.Flags()
	f.StringVar(&c.caFile, "ca-file", "", "PEM file of the CA that signs the controller's certificate, copied into the context (DATA-DIR/admin.config holds it; the API serves it at /apis/weft/v1/ca)")
	f.StringVar(&c.tokenFile, "token-file", "", tokenHelp)
	f.StringVar(&c.certFile, "client-certificate", "", "PEM file of a client certificate from the weft CA ('weft cert create')")
	f.StringVar(&c.keyFile, "client-key", "", "PEM file of the client certificate's key")
}

// given reports whether a credential was given.
func (c *credentialFlags) given() bool {
	return c.tokenFile != "" || c.certFile != "" || c.keyFile != ""
}

// apply sets x's CA and credential from the flags given: the CA is copied
// in; the token is copied in with embedToken, else its file is named; a
// token replaces a certificate and the other way round.
func (c *credentialFlags) apply(x *clientconfig.Context, embedToken bool) error {
	switch {
	case c.tokenFile != "" && c.certFile != "":
		return usageErrorf("give --token-file or --client-certificate, not both")
	case (c.certFile == "") != (c.keyFile == ""):
		return usageErrorf("give --client-certificate and --client-key together")
	}
	if c.caFile != "" {
		pem, err := readCAFile(c.caFile)
		if err != nil {
			return err
		}
		x.CertificateAuthority, x.CertificateAuthorityData = "", clientconfig.EncodeCA(pem)
	}
	var err error
	switch {
	case c.tokenFile != "":
		tok, err := clientconfig.ReadToken(c.tokenFile)
		if err != nil {
			return err
		}
		x.Token, x.TokenFile, x.ClientCertificate, x.ClientKey = "", "", "", ""
		if embedToken {
			x.Token = tok
		} else if x.TokenFile, err = filepath.Abs(c.tokenFile); err != nil {
			return err
		}
	case c.certFile != "":
		if x.ClientCertificate, err = filepath.Abs(c.certFile); err != nil {
			return err
		}
		if x.ClientKey, err = filepath.Abs(c.keyFile); err != nil {
			return err
		}
		x.Token, x.TokenFile = "", ""
	}
	return nil
}

// readCAFile reads a PEM file of CA certificates.
func readCAFile(path string) ([]byte, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	if !strings.Contains(string(pem), "-----BEGIN CERTIFICATE-----") {
		return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", path)
	}
	return pem, nil
}

// marshalValue encodes v as indented JSON or as YAML, ending in a newline.
func marshalValue(v any, format string) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	if format == formatYAML {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
	}
	return ensureNewline(data), nil
}
