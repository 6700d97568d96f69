package client

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// DefaultServer is the controller address used when none is configured.
const DefaultServer = "https://127.0.0.1:7443"

// DefaultTimeout bounds each request (other than Watch and Raw) unless
// WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// APIPrefix is the path under which the weft/v1 API is served.
const APIPrefix = "/apis/weft/v1"

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 1 << 20

// Client talks to one weft controller. It is safe for concurrent use.
// Close releases its idle connections.
type Client struct {
	base     string // scheme://host[:port][/prefix], no trailing slash
	hc       *http.Client
	timeout  time.Duration
	auth     string // Authorization header value; "" none
	pageSize int
}

// Option modifies a Client built by New.
type Option func(*config)

type config struct {
	httpClient *http.Client
	timeout    time.Duration
	maxIdle    int
	ca         []byte
	certs      []tls.Certificate
	token      string
	pageSize   int
}

// WithHTTPClient makes the Client use hc instead of its own pooled
// http.Client. hc must not set http.Client.Timeout if Watch is used (a
// watch is a long-lived response). It cannot be combined with WithCA or
// WithClientCertificate, which configure the Client's own transport.
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.httpClient = hc } }

// WithCA makes the Client trust the CAs in pem (PEM certificates: the weft
// CA) for the controller's certificate, instead of the system's roots.
func WithCA(pem []byte) Option { return func(c *config) { c.ca = pem } }

// WithClientCertificate makes the Client present cert (a certificate from
// the weft CA and its key) as its credential.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(c *config) { c.certs = append(c.certs, cert) }
}

// WithToken makes the Client send token as its credential
// ("Authorization: Bearer TOKEN").
func WithToken(token string) Option { return func(c *config) { c.token = token } }

// WithPageSize makes List ask for pages of at most n objects (the
// controller caps pages at its own maximum); List follows the pages and
// returns them all. Zero or less: the controller's page size.
func WithPageSize(n int) Option { return func(c *config) { c.pageSize = n } }

// WithTimeout sets the per-request timeout of every call except Watch and
// Raw (which are bounded by their context only). Zero or less disables it.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithMaxIdleConnsPerHost sets how many idle keep-alive connections the
// Client's own transport keeps (default 1024, enough for benchmarks that run
// many concurrent requests). Ignored with WithHTTPClient.
func WithMaxIdleConnsPerHost(n int) Option { return func(c *config) { c.maxIdle = n } }

// New returns a Client for the controller at server, e.g.
// "https://127.0.0.1:7443". A server without a scheme gets "https://".
func New(server string, opts ...Option) (*Client, error) {
	cfg := config{timeout: DefaultTimeout, maxIdle: 1024}
	for _, o := range opts {
		o(&cfg)
	}
	base, err := normalizeServer(server)
	if err != nil {
		return nil, err
	}
	hc := cfg.httpClient
	if hc == nil {
		t, err := newTransport(cfg)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: t}
	} else if cfg.ca != nil || cfg.certs != nil {
		return nil, errors.New("client: WithHTTPClient cannot be combined with WithCA or WithClientCertificate")
	}
	c := &Client{base: base, hc: hc, timeout: cfg.timeout, pageSize: cfg.pageSize}
	if cfg.token != "" {
		c.auth = "Bearer " + cfg.token
	}
	return c, nil
}

// newTransport is a keep-alive transport with bounded connect times and no
// overall response timeout (watches are long-lived; per-request timeouts come
// from contexts), verifying the controller's certificate against the CA of
// WithCA (else the system's roots). Nothing skips that verification.
func newTransport(cfg config) (*http.Transport, error) {
	maxIdle := cfg.maxIdle
	if maxIdle <= 0 {
		maxIdle = 1024
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: cfg.certs}
	if cfg.ca != nil {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(cfg.ca) {
			return nil, errors.New("client: the CA holds no PEM certificate")
		}
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   maxIdle,
	}, nil
}

func normalizeServer(server string) (string, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return "", errors.New("client: empty server URL")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("client: server URL %q: %w", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("client: server URL %q: scheme must be http or https", server)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: server URL %q: no host", server)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("client: server URL %q: must not have a query or fragment", server)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// Server returns the base URL the Client talks to.
func (c *Client) Server() string { return c.base }

// Close releases the Client's idle connections. It is idempotent; the
// Client stays usable (new requests open new connections).
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Create creates obj (POST) and returns the stored object, with the
// controller-set metadata and status. A name that exists gives an
// AlreadyExists *v1.StatusError. With v1.WithDryRun the controller stores
// nothing and returns the object as it would be stored.
func (c *Client) Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	k, ref, err := refOf(obj)
	if err != nil {
		return nil, err
	}
	if k.Namespaced && ref.Tenant == "" {
		return nil, fmt.Errorf("create %s: %w", ref, errNoTenant(k))
	}
	body, err := encode(obj, k)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", ref, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodPost, path: collectionPath(k, ref.Tenant), query: writeQuery(opts), body: body})
}

// Update replaces obj (PUT). If obj carries metadata.resourceVersion it must
// match the stored one, else the result is a Conflict *v1.StatusError; an
// empty resourceVersion means last write wins. Status in obj is ignored by
// the controller. With v1.WithDryRun nothing is stored.
func (c *Client) Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	return c.put(ctx, obj, "", "update", writeQuery(opts))
}

// writeQuery is the query of a write with opts.
func writeQuery(opts []apiv1.WriteOption) url.Values {
	if apiv1.NewWriteOptions(opts...).DryRun {
		return url.Values{"dryRun": {"All"}}
	}
	return nil
}

// UpdateStatus replaces obj's status with the one in obj (PUT .../status)
// and returns the stored object. Labels and spec in obj are ignored, and so
// are the status fields the controller allocated (addresses, VNIs, host
// IDs). A status has several writers, each owning some fields: one that
// owns only some uses PatchStatus, which keeps the others' fields.
func (c *Client) UpdateStatus(ctx context.Context, obj apiv1.Object) (apiv1.Object, error) {
	return c.put(ctx, obj, "/status", "update the status of", nil)
}

// put PUTs obj to its path plus sub; what names the call in errors.
func (c *Client) put(ctx context.Context, obj apiv1.Object, sub, what string, q url.Values) (apiv1.Object, error) {
	k, ref, err := refOf(obj)
	if err != nil {
		return nil, err
	}
	p, err := itemPath(k, ref.Tenant, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, ref, err)
	}
	body, err := encode(obj, k)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, ref, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodPut, path: p + sub, query: q, body: body})
}

// PatchStatus changes some fields of an object's status with a JSON merge
// patch (RFC 7386; PATCH .../status) and returns the stored object. status
// is the patch's status member, encoded as JSON: a map or a struct that
// holds only the fields to change; a nil value (JSON null) removes a field,
// and fields it does not name stay as stored. The controller applies the
// patch to the status as stored when it writes, so concurrent writers of
// other fields keep theirs; allocated fields do not change. A patch that
// changes nothing writes nothing. Fields the kind's status does not have
// give a BadRequest *v1.StatusError naming them.
func (c *Client) PatchStatus(ctx context.Context, kind, tenant, name string, status any) (apiv1.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	ref := apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}
	p, err := itemPath(k, tenant, name)
	if err != nil {
		return nil, fmt.Errorf("patch the status of %s: %w", ref, err)
	}
	body, err := json.Marshal(struct {
		Status any `json:"status"`
	}{status})
	if err != nil {
		return nil, fmt.Errorf("patch the status of %s: encode: %w", ref, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodPatch, path: p + "/status", body: body, contentType: apiv1.MergePatchType})
}

// Patch changes an object with patch, of media type patchType:
// v1.MergePatchType (a JSON merge patch, RFC 7386: {"spec": {"host":
// "h2"}}) or v1.JSONPatchType (a JSON patch, RFC 6902: [{"op": "replace",
// "path": "/spec/host", "value": "h2"}]). The controller applies it to the
// stored object (again if another writer got in between) and returns the
// result; a JSON patch whose test fails gives an Invalid *v1.StatusError.
func (c *Client) Patch(ctx context.Context, kind, tenant, name, patchType string, patch []byte, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	p, err := itemPath(k, tenant, name)
	if err != nil {
		return nil, fmt.Errorf("patch %s: %w", apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodPatch, path: p, query: writeQuery(opts), body: patch, contentType: patchType})
}

// ServerSideApply applies a manifest (one object, YAML or JSON, as its
// author wrote it) on the controller (v1.ApplyPatchType): it creates the
// object if it does not exist ("created"), else sets the fields the
// manifest names and keeps the others ("configured"). tenant is given to
// a tenant-scoped manifest without one. With v1.WithDryRun nothing is
// stored.
func (c *Client) ServerSideApply(ctx context.Context, manifest []byte, tenant string, opts ...apiv1.WriteOption) (string, apiv1.Object, error) {
	obj, err := apiv1.DecodeObject(manifest)
	if err != nil {
		return "", nil, err
	}
	k, ref, err := refOf(obj)
	if err != nil {
		return "", nil, err
	}
	if k.Namespaced && ref.Tenant == "" {
		ref.Tenant = tenant
	}
	p, err := itemPath(k, ref.Tenant, ref.Name)
	if err != nil {
		return "", nil, fmt.Errorf("apply %s: %w", ref, err)
	}
	data, code, err := c.call(ctx, request{method: http.MethodPatch, path: p, query: writeQuery(opts), body: manifest, contentType: apiv1.ApplyPatchType})
	if err != nil {
		return "", nil, err
	}
	out, err := decodeObject(k, data)
	if err != nil {
		return "", nil, fmt.Errorf("apply %s: %w", ref, err)
	}
	if code == http.StatusCreated {
		return Created, out, nil
	}
	return Configured, out, nil
}

// Get returns one object. kind is a kind, plural or short name ("Endpoint",
// "endpoints", "ep"); tenant is ignored for cluster-scoped kinds and required
// for the others.
func (c *Client) Get(ctx context.Context, kind, tenant, name string) (apiv1.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	p, err := itemPath(k, tenant, name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodGet, path: p})
}

// Delete deletes one object and returns it as it was. Deleting an object
// others depend on gives a Conflict *v1.StatusError whose Dependents name
// them. With v1.WithDryRun the controller only checks that it could.
func (c *Client) Delete(ctx context.Context, kind, tenant, name string, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	p, err := itemPath(k, tenant, name)
	if err != nil {
		return nil, fmt.Errorf("delete %s: %w", apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}, err)
	}
	return c.objectCall(ctx, k, request{method: http.MethodDelete, path: p, query: writeQuery(opts)})
}

// ListOption modifies a List or a Watch.
type ListOption func(q url.Values)

// WithFieldSelector selects by fields too: "spec.host=h1,status.phase!=Ready"
// (v1.SelectableFields lists the fields of each kind).
func WithFieldSelector(sel string) ListOption {
	return func(q url.Values) {
		if sel != "" {
			q.Set("fieldSelector", sel)
		}
	}
}

// List returns the objects of a kind and the resourceVersion of the list
// (start a Watch from it to follow changes without missing any). tenant ""
// with a tenant-scoped kind lists across all tenants. selector is a label
// selector ("app=web,tier in (a,b)"); "" selects everything. The controller
// returns long lists in pages (WithPageSize); List follows them all and
// returns the resourceVersion of the first, which the controller keeps for
// the pages after it.
func (c *Client) List(ctx context.Context, kind, tenant, selector string, opts ...ListOption) ([]apiv1.Object, string, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, "", err
	}
	var (
		out  []apiv1.Object
		rv   string
		cont string
	)
	for page := 0; ; page++ {
		q := url.Values{}
		if selector != "" {
			q.Set("labelSelector", selector)
		}
		if c.pageSize > 0 {
			q.Set("limit", strconv.Itoa(c.pageSize))
		}
		if cont != "" {
			q.Set("continue", cont)
		}
		for _, o := range opts {
			o(q)
		}
		data, _, err := c.call(ctx, request{method: http.MethodGet, path: collectionPath(k, tenant), query: q})
		if err != nil {
			return nil, "", err
		}
		var list struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
				Continue        string `json:"continue"`
			} `json:"metadata"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, "", fmt.Errorf("list %s: decode response: %w", k.Plural, err)
		}
		if page == 0 {
			rv = list.Metadata.ResourceVersion
			out = make([]apiv1.Object, 0, len(list.Items))
		}
		for i, raw := range list.Items {
			o, err := decodeObject(k, raw)
			if err != nil {
				return nil, "", fmt.Errorf("list %s: item %d: %w", k.Plural, len(out)+i, err)
			}
			out = append(out, o)
		}
		if list.Metadata.Continue == "" {
			return out, rv, nil
		}
		if list.Metadata.Continue == cont {
			return nil, "", fmt.Errorf("list %s: the controller returned the same continue token twice", k.Plural)
		}
		cont = list.Metadata.Continue
	}
}

// Raw sends one request to path (e.g. "/healthz", "/metrics") on the
// controller and returns the response whatever its status; the caller must
// close its body. It is bounded by ctx only. Transport failures are reported
// like those of the other methods.
func (c *Client) Raw(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, ctx, method, path, err)
	}
	return resp, nil
}

// request is one API request.
type request struct {
	method, path string
	query        url.Values
	body         []byte
	contentType  string // of body; "" is application/json
}

// objectCall performs a request whose 2xx response body is one object of kind k.
func (c *Client) objectCall(ctx context.Context, k apiv1.KindInfo, r request) (apiv1.Object, error) {
	data, _, err := c.call(ctx, r)
	if err != nil {
		return nil, err
	}
	o, err := decodeObject(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	return o, nil
}

// call performs one bounded request and returns the body and status of a
// 2xx response; any other status becomes a *apiv1.StatusError.
func (c *Client) call(ctx context.Context, r request) ([]byte, int, error) {
	rctx := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(rctx, r)
	if err != nil {
		return nil, 0, c.transportError(ctx, rctx, r.method, r.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
		return nil, 0, statusError(r.method, r.path, resp.StatusCode, data)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, c.transportError(ctx, rctx, r.method, r.path, fmt.Errorf("read response: %w", err))
	}
	return data, resp.StatusCode, nil
}

// send builds and sends a request; it does not read the response.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "weft-client")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", cmp.Or(r.contentType, "application/json"))
	}
	return c.hc.Do(req)
}

// transportError explains a failure to get a response: the caller gave up
// (ctx), the request timed out (rctx), or the controller is unreachable.
func (c *Client) transportError(ctx, rctx context.Context, method, path string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s %s%s: %w", method, c.base, path, context.Cause(ctx))
	case rctx.Err() != nil:
		return fmt.Errorf("%s %s%s: the weft controller did not answer within %s: %w", method, c.base, path, c.timeout, context.DeadlineExceeded)
	}
	if why := certificateProblem(err); why != "" {
		return &CertificateError{Server: c.base, Problem: why, Err: err}
	}
	return &UnreachableError{Server: c.base, Err: err}
}

// CertificateError reports that the TLS handshake with the controller
// failed over a certificate: the controller's is not trusted (wrong or
// missing CA, a name it is not valid for, expired), or the controller
// refused the Client's.
type CertificateError struct {
	Server  string // base URL of the controller
	Problem string // what went wrong, in words
	Err     error  // the TLS error
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("TLS with the weft controller at %s failed: %s: %v", e.Server, e.Problem, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateProblem explains a TLS failure over a certificate, or
// returns "" for other errors.
func certificateProblem(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		op       *net.OpError
	)
	switch {
	case errors.As(err, &unknown):
		return "its certificate is not signed by the CA this client trusts (wrong or missing CA: the certificateAuthority of your context, or --ca-file)"
	case errors.As(err, &hostname):
		return fmt.Sprintf("its certificate is not valid for %s (the controller adds names with --tls-san)", hostname.Host)
	case errors.As(err, &invalid):
		return "its certificate is not valid"
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert from the controller
		return "the controller refused the TLS handshake (this client's certificate?)"
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// net/http reports this with an untyped error.
		return "the controller serves plain HTTP (started with --insecure-http?): use an http:// server with --insecure-http"
	}
	return ""
}

// UnreachableError reports that no response came from the controller.
type UnreachableError struct {
	Server string // base URL of the controller
	Err    error  // the transport error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the weft controller at %s (is `weft controller` running? pick another with --server or WEFT_SERVER): %v", e.Server, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// statusError decodes a non-2xx response body into a StatusError; a body that
// is not one (a proxy's HTML page, say) still gives a StatusError with the
// HTTP status.
func statusError(method, path string, code int, body []byte) *apiv1.StatusError {
	var se apiv1.StatusError
	if err := json.Unmarshal(body, &se); err == nil && se.Reason != "" && se.Message != "" {
		if se.Code == 0 {
			se.Code = code
		}
		return &se
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	if msg == "" {
		msg = http.StatusText(code)
	}
	return &apiv1.StatusError{Code: code, Reason: reasonFor(code),
		Message: fmt.Sprintf("%s %s: HTTP %d: %s", method, path, code, msg)}
}

func reasonFor(code int) string {
	switch code {
	case http.StatusBadRequest:
		return apiv1.ReasonBadRequest
	case http.StatusUnauthorized:
		return apiv1.ReasonUnauthorized
	case http.StatusForbidden:
		return apiv1.ReasonForbidden
	case http.StatusTooManyRequests:
		return apiv1.ReasonTooManyRequests
	case http.StatusNotFound:
		return apiv1.ReasonNotFound
	case http.StatusConflict:
		return apiv1.ReasonConflict
	case http.StatusGone:
		return apiv1.ReasonGone
	case http.StatusUnprocessableEntity:
		return apiv1.ReasonInvalid
	case http.StatusRequestEntityTooLarge:
		return apiv1.ReasonTooLarge
	case http.StatusMethodNotAllowed:
		return apiv1.ReasonMethodNotAllowed
	case http.StatusUnsupportedMediaType:
		return apiv1.ReasonUnsupportedMedia
	case http.StatusServiceUnavailable:
		return apiv1.ReasonUnavailable
	case http.StatusGatewayTimeout:
		return apiv1.ReasonTimeout
	}
	return apiv1.ReasonInternal
}

// ---- kinds, paths and encoding ----

func lookupKind(kind string) (apiv1.KindInfo, error) {
	k, ok := apiv1.LookupKind(kind)
	if !ok {
		return apiv1.KindInfo{}, fmt.Errorf("unknown kind %q", kind)
	}
	return k, nil
}

// kindOf finds the KindInfo of obj from its kind field or, if that is
// empty, from its Go type.
func kindOf(obj apiv1.Object) (apiv1.KindInfo, error) {
	if obj == nil || reflect.ValueOf(obj).IsNil() {
		return apiv1.KindInfo{}, errors.New("nil object")
	}
	if kind := obj.GetTypeMeta().Kind; kind != "" {
		k, ok := apiv1.LookupKind(kind)
		if !ok || k.Kind != kind {
			return apiv1.KindInfo{}, fmt.Errorf("unknown kind %q", kind)
		}
		return k, nil
	}
	t := reflect.TypeOf(obj)
	for _, k := range apiv1.Kinds() {
		if reflect.TypeOf(k.New()) == t {
			return k, nil
		}
	}
	return apiv1.KindInfo{}, fmt.Errorf("object of type %T has no kind", obj)
}

func refOf(obj apiv1.Object) (apiv1.KindInfo, apiv1.Ref, error) {
	k, err := kindOf(obj)
	if err != nil {
		return k, apiv1.Ref{}, err
	}
	ref := apiv1.RefOf(obj)
	ref.Kind = k.Kind
	if !k.Namespaced {
		ref.Tenant = ""
	}
	if ref.Name == "" {
		return k, ref, fmt.Errorf("%s: metadata.name is empty", strings.ToLower(k.Kind))
	}
	return k, ref, nil
}

func errNoTenant(k apiv1.KindInfo) error {
	return fmt.Errorf("%s is tenant-scoped: a tenant is required", strings.ToLower(k.Kind))
}

func collectionPath(k apiv1.KindInfo, tenant string) string {
	if k.Namespaced && tenant != "" {
		return APIPrefix + "/tenants/" + url.PathEscape(tenant) + "/" + k.Plural
	}
	return APIPrefix + "/" + k.Plural
}

func itemPath(k apiv1.KindInfo, tenant, name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if k.Namespaced && tenant == "" {
		return "", errNoTenant(k)
	}
	return collectionPath(k, tenant) + "/" + url.PathEscape(name), nil
}

// encode marshals obj as JSON with apiVersion and kind filled in.
func encode(obj apiv1.Object, k apiv1.KindInfo) ([]byte, error) {
	tm := obj.GetTypeMeta()
	if tm.APIVersion == "" || tm.Kind == "" {
		cp, err := clone(obj, k)
		if err != nil {
			return nil, err
		}
		*cp.GetTypeMeta() = apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: k.Kind}
		obj = cp
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return data, nil
}

// decodeObject decodes a server response into an object of kind k. It is
// lenient about unknown fields so that an older client keeps working with a
// newer controller.
func decodeObject(k apiv1.KindInfo, data []byte) (apiv1.Object, error) {
	o := k.New()
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Kind, err)
	}
	if o.GetTypeMeta().Kind == "" {
		*o.GetTypeMeta() = apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: k.Kind}
	}
	return o, nil
}

// clone deep-copies obj through JSON.
func clone(obj apiv1.Object, k apiv1.KindInfo) (apiv1.Object, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("copy %s: %w", k.Kind, err)
	}
	return decodeObject(k, data)
}
