package observe

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/rest"
)

// Paths the Handler serves, below the REST API's.
const (
	ReportPath   = "POST /apis/weft/v1/tenants/{tenant}/traces/{name}/report"
	UploadPath   = "POST /apis/weft/v1/tenants/{tenant}/captures/{name}/upload"
	DownloadPath = "GET /apis/weft/v1/tenants/{tenant}/captures/{name}/pcapng"
)

// Handler serves the agents' trace reports and capture uploads and the
// captures' pcapng files. Mount it on a mux beside the REST API with
// Mount.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	c.Mount(mux)
	return mux
}

// Mount registers the Handler's paths on mux.
func (c *Controller) Mount(mux *http.ServeMux) {
	mux.HandleFunc(ReportPath, c.report)
	mux.HandleFunc(UploadPath, c.upload)
	mux.HandleFunc(DownloadPath, c.download)
}

// authorize decides whether r may do verb on obj, the stored Trace or
// Capture (nil if there is none): as the REST API's authorizer would,
// except that an agent may write the status ("status": report, upload)
// of a trace its host takes part in and of a capture of a tenant with
// endpoints on its host, as that host only, and nothing else. An object a
// credential may not see is not found.
func (c *Controller) authorize(r *http.Request, verb string, ref apiv1.Ref, obj apiv1.Object) (*auth.Identity, error) {
	var id *auth.Identity
	if c.cfg.Authenticator != nil {
		var err error
		if id, err = c.cfg.Authenticator.Authenticate(r); err != nil {
			return nil, apiv1.NewUnauthorized("%v", err)
		}
	}
	if id == nil {
		if !c.cfg.Insecure {
			return nil, apiv1.NewUnauthorized("this API needs a credential: a bearer token or a client certificate from the cluster CA")
		}
		id = &auth.Anonymous
	}
	if id.Role != auth.RoleAgent {
		err := auth.NewAuthorizer(c.st).Authorize(id, auth.Request{Verb: verb, Kind: ref.Kind, Tenant: ref.Tenant, Name: ref.Name, Old: obj})
		if err == nil && obj == nil {
			err = apiv1.NewNotFound(ref)
		}
		return id, err
	}
	ok := false
	switch o := obj.(type) {
	case *apiv1.Trace:
		ok = verb == auth.VerbStatus && slices.Contains(o.Status.Hosts, id.Host)
	case *apiv1.Capture:
		ok = verb == auth.VerbStatus && r.URL.Query().Get("host") == id.Host &&
			slices.ContainsFunc(c.st.EndpointsByHost(id.Host), func(ep *apiv1.Endpoint) bool { return ep.Metadata.Tenant == ref.Tenant })
	}
	if !ok {
		return nil, apiv1.NewNotFound(ref)
	}
	return id, nil
}

// proxy forwards a request to the replica that collects the capture,
// credentials included.
func (c *Controller) proxy(w http.ResponseWriter, r *http.Request, collector string) {
	u, err := url.Parse(collector)
	if err != nil || u.Host == "" {
		rest.WriteError(w, apiv1.NewStatus(http.StatusBadGateway, apiv1.ReasonUnavailable, "capture collector %q unusable", collector))
		return
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = c.cfg.Transport
	p.FlushInterval = -1
	p.ServeHTTP(w, r)
}
