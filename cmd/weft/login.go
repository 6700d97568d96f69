package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
)

func (a *app) newLoginCmd() *cobra.Command {
	var creds credentialFlags
	cmd := &cobra.Command{
		Use:   "login --server URL --ca-file FILE (--token-file FILE | --client-certificate FILE --client-key FILE)",
		Short: "Check a controller and a credential, and save them as a context",
		Long: `Check that the controller at --server presents a certificate signed by the
CA in --ca-file and accepts the credential (a token from 'weft token create'
or a client certificate from 'weft cert create'), then write them to the
configuration file as the context --context (default "default"; replaced if
it exists) and make it the current one. The CA and the token are copied into
the file (mode 0600); the certificate and key files are referred to.`,
		Example: `  weft login --server https://10.0.0.1:7443 --ca-file ca.pem --token-file admin.token
  weft login --server https://10.0.0.1:7443 --ca-file ca.pem --token-file acme.token --tenant acme --context acme`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			server := a.flagServer
			if server == "" {
				server = a.env.getenv("WEFT_SERVER")
			}
			if server == "" {
				return usageErrorf("--server is required")
			}
			name := a.context
			if name == "" {
				name = "default"
			}
			if !creds.given() {
				return usageErrorf("a credential is required: --token-file, or --client-certificate and --client-key")
			}
			x := clientconfig.Context{Name: name, Server: server, Tenant: a.flagTenant, InsecureHTTP: a.insecureHTTP}
			if err := creds.apply(&x, true); err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			cfg.SetContext(x)
			cfg.CurrentContext = name
			s, err := cfg.Resolve(clientconfig.Overrides{Context: name})
			if err != nil {
				return usageErrorf("%v", err)
			}
			if err := checkLogin(cmd.Context(), s); err != nil {
				return err
			}
			if err := cfg.Save(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Logged in to %s; context %q written to %s and made current.\n", s.Server, name, cfg.Path())
			return nil
		},
	}
	creds.register(cmd, "file holding a token from 'weft token create' (copied into the context)")
	return cmd
}

// checkLogin asks the controller for a list of tenants with the settings'
// credential: any answer but 401 proves the TLS and the credential (a
// tenant's credential may be refused the list, 403, yet be valid).
func checkLogin(ctx context.Context, s *clientconfig.Settings) error {
	cl, err := s.NewClient(client.WithTimeout(10 * time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	_, _, err = cl.List(ctx, apiv1.KindTenant, "", "")
	switch {
	case err == nil, apiv1.IsForbidden(err):
		return nil
	case apiv1.ReasonOf(err) == apiv1.ReasonUnauthorized:
		return fmt.Errorf("login: the controller at %s does not accept this credential (wrong, expired or revoked): %w", s.Server, err)
	}
	return fmt.Errorf("login: %w", err)
}
