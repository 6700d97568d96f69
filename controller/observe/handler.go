package observe

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"

	apiv1 "github.com/weftnet/weft/api/v1"
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

func (c *Controller) authorize(r *http.Request, verb string, ref apiv1.Ref) error {
	if c.cfg.Authorize == nil {
		return nil
	}
	return c.cfg.Authorize(r, verb, ref)
}

// proxy forwards a request to the replica that collects the capture,
// credentials included.
func (c *Controller) proxy(w http.ResponseWriter, r *http.Request, collector string) {
	u, err := url.Parse(collector)
	if err != nil || u.Host == "" {
		writeError(w, apiv1.NewStatus(http.StatusBadGateway, apiv1.ReasonUnavailable, "capture collector %q unusable", collector))
		return
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = c.cfg.Transport
	p.FlushInterval = -1
	p.ServeHTTP(w, r)
}

// writeError answers with a StatusError as the REST API does.
func writeError(w http.ResponseWriter, err error) {
	var se *apiv1.StatusError
	if !errors.As(err, &se) {
		se = apiv1.NewStatus(http.StatusInternalServerError, apiv1.ReasonInternal, "%v", err)
	}
	b, _ := json.Marshal(se)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(se.Code)
	_, _ = w.Write(append(b, '\n'))
}
