package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

// testCA is a CA that signs server and client certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate for cn, a server one valid for ips if any.
func (ca *testCA) issue(t *testing.T, cn string, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if len(ips) > 0 {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves h over TLS with a certificate from ca valid for
// 127.0.0.1, asking for client certificates from ca.
func tlsServer(t *testing.T, ca *testCA, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	ts.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "controller", net.IPv4(127, 0, 0, 1))},
		ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: pool,
	}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes the tests fail on purpose
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// whoami answers every request with who the caller is: the bearer token
// or the client certificate's CN, or 401.
func whoami(w http.ResponseWriter, r *http.Request) {
	who := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		who = "cert:" + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if who == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(apiv1.NewUnauthorized("no credential"))
		return
	}
	obj := tenant(who)
	_ = json.NewEncoder(w).Encode(obj)
}

func TestTLS(t *testing.T) {
	ca := newTestCA(t, "weft CA")
	other := newTestCA(t, "another CA")
	ts := tlsServer(t, ca, http.HandlerFunc(whoami))
	host := strings.TrimPrefix(ts.URL, "https://")
	for _, tc := range []struct {
		name    string
		server  string
		opts    []client.Option
		want    string // the name whoami answers
		wantErr string
		reason  string
	}{
		{name: "token", server: ts.URL, opts: []client.Option{client.WithCA(ca.pem), client.WithToken("weft_1_s")}, want: "weft_1_s"},
		{name: "no scheme is https", server: host, opts: []client.Option{client.WithCA(ca.pem), client.WithToken("t")}, want: "t"},
		{name: "client certificate", server: ts.URL, opts: []client.Option{client.WithCA(ca.pem), client.WithClientCertificate(ca.issue(t, "alice"))}, want: "cert:alice"},
		{name: "anonymous", server: ts.URL, opts: []client.Option{client.WithCA(ca.pem)}, reason: apiv1.ReasonUnauthorized},
		{name: "wrong CA", server: ts.URL, opts: []client.Option{client.WithCA(other.pem), client.WithToken("t")},
			wantErr: "its certificate is not signed by the CA this client trusts"},
		{name: "no CA", server: ts.URL, opts: []client.Option{client.WithToken("t")},
			wantErr: "its certificate is not signed by the CA this client trusts"},
		{name: "wrong name", server: strings.Replace(ts.URL, "127.0.0.1", "localhost", 1), opts: []client.Option{client.WithCA(ca.pem)},
			wantErr: "its certificate is not valid for localhost (the controller adds names with --tls-san)"},
		// The client offers only certificates of the CAs the server names.
		{name: "client certificate of another CA", server: ts.URL, opts: []client.Option{client.WithCA(ca.pem), client.WithClientCertificate(other.issue(t, "mallory"))},
			reason: apiv1.ReasonUnauthorized},
		{name: "http to an https server", server: strings.Replace(ts.URL, "https", "http", 1), reason: apiv1.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.server, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			o, err := c.Get(t.Context(), "tenant", "", "x")
			switch {
			case tc.wantErr != "":
				var ce *client.CertificateError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.server) {
					t.Fatalf("error = %v (%T), want a CertificateError naming the server and saying %q", err, err, tc.wantErr)
				}
			case tc.reason != "":
				if apiv1.ReasonOf(err) != tc.reason {
					t.Fatalf("error = %v, want reason %s", err, tc.reason)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if got := o.GetObjectMeta().Name; got != tc.want {
					t.Errorf("the server saw %q, want %q", got, tc.want)
				}
			}
		})
	}
}

func TestTLSPlainHTTPServer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(whoami))
	defer ts.Close()
	c, err := client.New(strings.Replace(ts.URL, "http", "https", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Get(t.Context(), "tenant", "", "x")
	if want := "the controller serves plain HTTP"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want one saying %q", err, want)
	}
}

func TestNewTLSOptions(t *testing.T) {
	if _, err := client.New("https://h", client.WithCA([]byte("not PEM"))); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("New with a CA that is not PEM: %v", err)
	}
	if _, err := client.New("https://h", client.WithCA(newTestCA(t, "ca").pem), client.WithHTTPClient(http.DefaultClient)); err == nil {
		t.Error("New with WithCA and WithHTTPClient succeeded")
	}
}

func TestAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		code   int
		reason string
	}{
		{http.StatusUnauthorized, apiv1.ReasonUnauthorized},
		{http.StatusForbidden, apiv1.ReasonForbidden},
		{http.StatusTooManyRequests, apiv1.ReasonTooManyRequests},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", tc.code) // a proxy's answer: not a Status
			}))
			defer ts.Close()
			c, err := client.New(ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Get(t.Context(), "tenant", "", "x")
			if se := statusOf(t, err); se.Code != tc.code || se.Reason != tc.reason {
				t.Errorf("got %+v, want code %d reason %s", se, tc.code, tc.reason)
			}
		})
	}
}

// pagedList serves n tenants in pages of at most limit (default max),
// with a continue token that is the next index.
func pagedList(t *testing.T, n, max int, seen *[]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		*seen = append(*seen, q.Encode())
		limit := max
		if l := q.Get("limit"); l != "" {
			limit, _ = strconv.Atoi(l)
			limit = min(limit, max)
		}
		from, _ := strconv.Atoi(q.Get("continue"))
		var items []json.RawMessage
		for i := from; i < n && len(items) < limit; i++ {
			data, _ := json.Marshal(tenant(fmt.Sprintf("t%03d", i)))
			items = append(items, data)
		}
		meta := map[string]string{"resourceVersion": "7"}
		if next := from + len(items); next < n {
			meta["continue"] = strconv.Itoa(next)
			meta["resourceVersion"] = "7"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "List", "metadata": meta, "items": items})
	}
}

func TestListPages(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n, max    int
		pageSize  int
		wantPages []string
	}{
		{name: "one page", n: 3, max: 5000, wantPages: []string{""}},
		{name: "server pages", n: 5, max: 2, wantPages: []string{"", "continue=2", "continue=4"}},
		{name: "client pages", n: 5, max: 5000, pageSize: 3, wantPages: []string{"limit=3", "continue=3&limit=3"}},
		{name: "exact pages", n: 4, max: 5000, pageSize: 2, wantPages: []string{"limit=2", "continue=2&limit=2"}},
		{name: "empty", n: 0, max: 5000, wantPages: []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []string
			ts := httptest.NewServer(pagedList(t, tc.n, tc.max, &seen))
			defer ts.Close()
			c, err := client.New(ts.URL, client.WithPageSize(tc.pageSize))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			objs, rv, err := c.List(t.Context(), "tenants", "", "")
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := range tc.n {
				want = append(want, fmt.Sprintf("tenant/t%03d", i))
			}
			if diff := cmp.Diff(want, refs(objs), cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })); diff != "" {
				t.Errorf("List (-want +got):\n%s", diff)
			}
			if rv != "7" {
				t.Errorf("resourceVersion = %q, want 7", rv)
			}
			if diff := cmp.Diff(tc.wantPages, seen); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListSameContinueTwice(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"metadata":{"continue":"x"},"items":[]}`))
	}))
	defer ts.Close()
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.List(t.Context(), "tenants", "", ""); err == nil || !strings.Contains(err.Error(), "same continue token twice") {
		t.Fatalf("List = %v, want an error about the repeated continue token", err)
	}
}

func TestTLSClientCertificateRequired(t *testing.T) {
	ca := newTestCA(t, "weft CA")
	ts := tlsServer(t, ca, http.HandlerFunc(whoami))
	ts.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	c, err := client.New(ts.URL, client.WithCA(ca.pem))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Get(t.Context(), "tenant", "", "x")
	var ce *client.CertificateError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "the controller refused the TLS handshake") {
		t.Fatalf("error = %v (%T), want a CertificateError saying the controller refused the handshake", err, err)
	}
}
