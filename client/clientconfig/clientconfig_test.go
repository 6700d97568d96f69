package clientconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
)

const caPEM = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"WEFT_CONFIG", map[string]string{"WEFT_CONFIG": "/etc/weft.conf", "HOME": "/home/u"}, "/etc/weft.conf"},
		{"XDG", map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/home/u"}, "/x/weft/config"},
		{"HOME", map[string]string{"HOME": "/home/u"}, "/home/u/.config/weft/config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := clientconfig.DefaultPath(func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("DefaultPath = %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := clientconfig.DefaultPath(func(string) string { return "" }); err == nil {
		t.Error("DefaultPath without any environment succeeded")
	}
}

func TestSaveLoadUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "config")
	c, err := clientconfig.Load(path)
	if err != nil {
		t.Fatalf("Load of a missing file: %v", err)
	}
	if len(c.Contexts) != 0 || c.Path() != path {
		t.Fatalf("Load of a missing file = %+v", c)
	}
	c.SetContext(clientconfig.Context{Name: "lab", Server: "https://10.0.0.1:7443", Token: "weft_a_b", CertificateAuthorityData: clientconfig.EncodeCA([]byte(caPEM))})
	c.SetContext(clientconfig.Context{Name: "acme", Server: "https://10.0.0.1:7443", TokenFile: "acme.token", Tenant: "acme"})
	c.SetContext(clientconfig.Context{Name: "lab", Server: "https://10.0.0.2:7443", Token: "weft_c_d"}) // replaces
	if err := c.UseContext("nope"); err == nil || !strings.Contains(err.Error(), `no context "nope"`) || !strings.Contains(err.Error(), "it has lab, acme") {
		t.Errorf("UseContext of a missing context: %v", err)
	}
	if err := c.UseContext("acme"); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	want := `apiVersion: weft/v1
contexts:
- name: lab
  server: https://10.0.0.2:7443
  token: weft_c_d
- name: acme
  server: https://10.0.0.1:7443
  tenant: acme
  tokenFile: acme.token
currentContext: acme
kind: Config
`
	if diff := cmp.Diff(want, string(data)); diff != "" {
		t.Errorf("saved file (-want +got):\n%s", diff)
	}
	again, err := clientconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.Contexts, again.Contexts); diff != "" || again.CurrentContext != "acme" {
		t.Errorf("loaded (-saved +loaded):\n%s, current %q", diff, again.CurrentContext)
	}
	red := again.Redacted()
	if red.Contexts[0].Token != "REDACTED" || again.Contexts[0].Token != "weft_c_d" {
		t.Errorf("Redacted: %+v; original %+v", red.Contexts[0], again.Contexts[0])
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"unknown field", "apiVersion: weft/v1\nkind: Config\ncontexts:\n- name: a\n  sever: x\n", `unknown field "sever"`},
		{"wrong kind", "apiVersion: v1\nkind: Config\n", `apiVersion "v1"`},
		{"duplicate context", "apiVersion: weft/v1\nkind: Config\ncontexts:\n- name: a\n- name: a\n", `a second context named "a"`},
		{"unnamed context", "apiVersion: weft/v1\nkind: Config\ncontexts:\n- server: x\n", "contexts[0]: no name"},
		{"not YAML", "{", "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config")
			write(t, path, tc.data)
			if _, err := clientconfig.Load(path); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Load = %v, want an error naming the file and saying %q", err, tc.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ca.pem"), caPEM)
	write(t, filepath.Join(dir, "acme.token"), " weft_acme_x\n")
	write(t, filepath.Join(dir, "two.token"), "a b")
	c := clientconfig.New(filepath.Join(dir, "config"))
	c.SetContext(clientconfig.Context{Name: "lab", Server: "https://10.0.0.1:7443", CertificateAuthorityData: clientconfig.EncodeCA([]byte(caPEM)), Token: "weft_admin_x"})
	c.SetContext(clientconfig.Context{Name: "acme", Server: "10.0.0.2:7443", CertificateAuthority: "ca.pem", TokenFile: "acme.token", Tenant: "acme"})
	c.SetContext(clientconfig.Context{Name: "plain", Server: "http://127.0.0.1:7443", InsecureHTTP: true})
	c.SetContext(clientconfig.Context{Name: "plain-refused", Server: "http://127.0.0.1:7443"})
	c.SetContext(clientconfig.Context{Name: "both-ca", CertificateAuthority: "ca.pem", CertificateAuthorityData: "eA=="})
	c.SetContext(clientconfig.Context{Name: "bad-token", TokenFile: "two.token"})
	c.SetContext(clientconfig.Context{Name: "half-cert", ClientCertificate: "c.pem"})
	c.CurrentContext = "lab"

	type got struct {
		Context, Server, Tenant, Token, CA string
		Insecure                           bool
	}
	for _, tc := range []struct {
		name    string
		o       clientconfig.Overrides
		want    got
		wantErr string
	}{
		{name: "current context", want: got{Context: "lab", Server: "https://10.0.0.1:7443", Token: "weft_admin_x", CA: caPEM}},
		{name: "--context", o: clientconfig.Overrides{Context: "acme"},
			want: got{Context: "acme", Server: "https://10.0.0.2:7443", Tenant: "acme", Token: "weft_acme_x", CA: caPEM}},
		{name: "server and tenant override the context", o: clientconfig.Overrides{Context: "acme", Server: "https://10.9.9.9:7443", Tenant: "globex"},
			want: got{Context: "acme", Server: "https://10.9.9.9:7443", Tenant: "globex", Token: "weft_acme_x", CA: caPEM}},
		{name: "plain HTTP allowed by the context", o: clientconfig.Overrides{Context: "plain"},
			want: got{Context: "plain", Server: "http://127.0.0.1:7443", Insecure: true}},
		{name: "plain HTTP refused", o: clientconfig.Overrides{Context: "plain-refused"}, wantErr: "is plain HTTP"},
		{name: "plain HTTP server override refused", o: clientconfig.Overrides{Server: "http://10.0.0.1:7443"}, wantErr: "--insecure-http"},
		{name: "plain HTTP allowed by the flag", o: clientconfig.Overrides{Server: "10.0.0.1:7443", InsecureHTTP: true},
			want: got{Context: "lab", Server: "http://10.0.0.1:7443", Token: "weft_admin_x", CA: caPEM, Insecure: true}},
		{name: "missing context", o: clientconfig.Overrides{Context: "nope"}, wantErr: `no context "nope"`},
		{name: "two CAs", o: clientconfig.Overrides{Context: "both-ca"}, wantErr: "not both"},
		{name: "bad token file", o: clientconfig.Overrides{Context: "bad-token"}, wantErr: "want one token"},
		{name: "half a certificate", o: clientconfig.Overrides{Context: "half-cert"}, wantErr: "both clientCertificate and clientKey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.Resolve(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve = %+v, %v; want an error containing %q", s, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g := got{Context: s.Context, Server: s.Server, Tenant: s.Tenant, Token: s.Token, CA: string(s.CA), Insecure: s.InsecureHTTP}
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
		})
	}

	// Without a file: the default server and no credential.
	s, err := clientconfig.New(filepath.Join(dir, "none")).Resolve(clientconfig.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Server != client.DefaultServer || s.Token != "" || s.CA != nil || s.Context != "" {
		t.Errorf("Resolve without contexts = %+v", s)
	}
}

func TestLoadSettings(t *testing.T) {
	dir := t.TempDir()
	if _, err := clientconfig.LoadSettings(filepath.Join(dir, "none")); err == nil {
		t.Error("LoadSettings of a missing file succeeded")
	}
	c := clientconfig.New(filepath.Join(dir, "config"))
	c.SetContext(clientconfig.Context{Name: "admin", Server: "https://10.0.0.1:7443", Token: "weft_a_b"})
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := clientconfig.LoadSettings(c.Path()); err == nil || !strings.Contains(err.Error(), "no current context") {
		t.Errorf("LoadSettings without a current context: %v", err)
	}
	if err := c.UseContext("admin"); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	s, err := clientconfig.LoadSettings(c.Path())
	if err != nil || s.Server != "https://10.0.0.1:7443" || s.Token != "weft_a_b" {
		t.Errorf("LoadSettings = %+v, %v", s, err)
	}
}
