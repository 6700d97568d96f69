package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
)

func (a *app) newCertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Issue client certificates from the weft CA (cluster-admin)",
	}
	cmd.AddCommand(a.newCertCreateCmd())
	return cmd
}

func (a *app) newCertCreateCmd() *cobra.Command {
	var (
		req               client.CertificateRequest
		certFile, keyFile string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --role ROLE [--tenant T] [--host H] [--ttl DURATION]",
		Short: "Make a key here and have the weft CA certify it for user NAME",
		Long: `Generate a private key (ECDSA P-256) on this machine, send a certificate
signing request for user NAME (the certificate's common name) to the
controller, and write the certificate the weft CA signs, with the role and
scope it carries, to --cert-file and the key to --key-file (mode 0600). The
key never leaves this machine. A cluster-admin credential is needed.

` + roleHelp,
		Example: `  weft cert create alice --role tenant-admin --tenant acme --ttl 720h
  weft config set-context alice --client-certificate alice.crt --client-key alice.key`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if req.Role == "" {
				return usageErrorf("--role is required")
			}
			if cmd.Flags().Changed("tenant") {
				req.Tenant = a.flagTenant
			}
			if certFile == "" {
				certFile = name + ".crt"
			}
			if keyFile == "" {
				keyFile = name + ".key"
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return fmt.Errorf("generate a key: %w", err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
			if err != nil {
				return fmt.Errorf("make the certificate request: %w", err)
			}
			req.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
			cl, err := a.client()
			if err != nil {
				return err
			}
			cert, err := cl.CreateCertificate(cmd.Context(), req)
			if err != nil {
				return err
			}
			der, err := x509.MarshalECPrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode the key: %w", err)
			}
			if err := clientconfig.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
				return err
			}
			if err := os.WriteFile(certFile, []byte(cert.Certificate), 0o644); err != nil {
				return fmt.Errorf("write the certificate: %w", err)
			}
			fmt.Fprintf(a.stdout, "Certificate of %s (%s) written to %s, its key to %s.\n", name, scopeOf(req.Role, req.Tenant, req.Host), certFile, keyFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "cluster-admin, tenant-admin, tenant-viewer or agent")
	f.StringVar(&req.Host, "host", "", "host of an agent certificate")
	f.StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 720h (default: the controller's, a year)")
	f.StringVar(&certFile, "cert-file", "", "where to write the certificate (default NAME.crt)")
	f.StringVar(&keyFile, "key-file", "", "where to write the key (default NAME.key)")
	return cmd
}
