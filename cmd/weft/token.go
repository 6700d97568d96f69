package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/client"
)

// roleHelp lists the roles a token or certificate can have.
const roleHelp = `Roles: cluster-admin (everything); tenant-admin --tenant T (T's objects,
no hosts, status or netns); tenant-viewer --tenant T (read T); agent --host H
(one host's agent; agents get theirs by enrolling); bootstrap --host H (one
enrolment of host H; expires in 1h unless --ttl).`

func (a *app) newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens (cluster-admin)",
		Long: `Manage the controller's bearer tokens (a cluster-admin credential is
needed). A token is weft_<id>_<secret>; the controller keeps only a hash of
the secret, so it is printed once, by 'create'. Every replica refuses a
revoked or expired token within a second.

` + roleHelp,
		Example: `  weft token create --role tenant-admin --tenant acme --ttl 720h > acme.token
  weft token create --role bootstrap --host h1 > h1.token
  weft token list
  weft token revoke 3f2a9c0d1e4b5a69`,
	}
	cmd.AddCommand(a.newTokenCreateCmd(), a.newTokenListCmd(), a.newTokenRevokeCmd())
	return cmd
}

func (a *app) newTokenCreateCmd() *cobra.Command {
	var (
		req    client.TokenRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "create --role ROLE [--tenant T] [--host H] [--ttl DURATION]",
		Short: "Create a token and print it (shown only this once)",
		Long: `Create a token and print it on stdout (the details go to stderr), or, with
-o json|yaml, print it with its details. --tenant is the tenant of a tenant
role, --host the host of an agent or bootstrap token.

A bootstrap token enrols one host once: give it to 'weft agent
--bootstrap-token-file' with the CA ('weft agent --ca-file', or --ca-sha256
with the fingerprint printed here).

` + roleHelp,
		Example: `  weft token create --role cluster-admin --description ops > admin.token
  weft token create --role bootstrap --host h1 > h1.token`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != formatJSON && output != formatYAML {
				return usageErrorf("-o %q: want text, json or yaml", output)
			}
			if req.Role == "" {
				return usageErrorf("--role is required")
			}
			if cmd.Flags().Changed("tenant") {
				req.Tenant = a.flagTenant // never a default tenant from the context
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			tok, err := cl.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if output != "text" {
				data, err := marshalValue(tok, output)
				if err != nil {
					return err
				}
				_, err = a.stdout.Write(data)
				return err
			}
			fmt.Fprintln(a.stdout, tok.Secret)
			fmt.Fprintf(a.stderr, "Token %s (%s) created; it is shown only this once. %s\n", tok.ID, scopeOf(tok.Role, tok.Tenant, tok.Host), expiry(tok.Expires))
			if tok.Role == "bootstrap" {
				ca, err := cl.CA(cmd.Context())
				if err != nil {
					return err
				}
				fp, err := caFingerprint(ca)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "CA fingerprint sha256:%s\nOn the host: weft agent --host %s --bootstrap-token-file FILE --ca-sha256 %s --api %s ...\n", fp, tok.Host, fp, a.server)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "cluster-admin, tenant-admin, tenant-viewer, agent or bootstrap")
	f.StringVar(&req.Host, "host", "", "host of an agent or bootstrap token")
	f.StringVar(&req.TTL, "ttl", "", `lifetime, e.g. 24h (default: none; bootstrap 1h)`)
	f.StringVar(&req.Description, "description", "", "what the token is for")
	f.StringVarP(&output, "output", "o", "text", "output format: text (the token alone), json or yaml")
	return cmd
}

func (a *app) newTokenListCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (without their secrets)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output); err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			toks, err := cl.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if output != formatTable {
				data, err := marshalValue(map[string]any{"items": toks}, output)
				if err != nil {
					return err
				}
				_, err = a.stdout.Write(data)
				return err
			}
			if len(toks) == 0 {
				fmt.Fprintln(a.stderr, "No tokens found.")
				return nil
			}
			now := a.env.now()
			rows := make([][]string, len(toks))
			for i, t := range toks {
				exp := "never"
				if !t.Expires.IsZero() {
					exp = "in " + humanDuration(t.Expires.Sub(now))
					if !t.Expires.After(now) {
						exp = "expired"
					}
				}
				rows[i] = []string{t.ID, t.Role, orNone(t.Tenant), orNone(t.Host), exp, humanDuration(now.Sub(t.Created)), t.Description}
			}
			return writeTable(a.stdout, []string{"ID", "ROLE", "TENANT", "HOST", "EXPIRES", "AGE", "DESCRIPTION"}, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table, json or yaml")
	return cmd
}

func (a *app) newTokenRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID [ID...]",
		Short: "Revoke tokens: every replica refuses them within a second",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s: want ID [ID...]", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := cl.RevokeToken(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "token %s revoked\n", id)
			}
			return nil
		},
	}
}

// scopeOf describes a role and its tenant or host.
func scopeOf(role, tenant, host string) string {
	s := "role " + role
	if tenant != "" {
		s += ", tenant " + tenant
	}
	if host != "" {
		s += ", host " + host
	}
	return s
}

func expiry(t time.Time) string {
	if t.IsZero() {
		return "It does not expire."
	}
	return "It expires at " + t.UTC().Format(time.RFC3339) + "."
}

// caFingerprint returns the SHA-256 of the first certificate's DER in a
// PEM, in hex.
func caFingerprint(caPEM []byte) (string, error) {
	b, _ := pem.Decode(caPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return "", fmt.Errorf("the CA is not a PEM certificate")
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// parseFingerprint reads a SHA-256 fingerprint: 64 hex digits, optionally
// after "sha256:" and with colons between bytes.
func parseFingerprint(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("want a SHA-256 fingerprint: 64 hex digits")
	}
	return b, nil
}
