package restreport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/observe/trace"
)

var _ agent.ObservationReporter = (*Reporter)(nil)

// ReportTrace posts a host's report about a trace
// (/apis/weft/v1/tenants/{tenant}/traces/{name}/report).
func (r *Reporter) ReportTrace(ctx context.Context, tenant, name string, rep *trace.Report) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("report trace %s/%s: %w", tenant, name, err)
	}
	return r.post(ctx, "/apis/weft/v1/tenants/"+url.PathEscape(tenant)+"/traces/"+url.PathEscape(name)+"/report", bytes.NewReader(b))
}

// UploadCapture streams a capture's records from body in one request
// (/apis/weft/v1/tenants/{tenant}/captures/{name}/upload).
func (r *Reporter) UploadCapture(ctx context.Context, tenant, name, uid, host string, body io.Reader) error {
	q := url.Values{"uid": {uid}, "host": {host}}
	return r.post(ctx, "/apis/weft/v1/tenants/"+url.PathEscape(tenant)+"/captures/"+url.PathEscape(name)+"/upload?"+q.Encode(), body)
}

func (r *Reporter) post(ctx context.Context, path string, body io.Reader) error {
	resp, err := r.c.Raw(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		err := fmt.Errorf("POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
		if resp.StatusCode/100 == 4 {
			return fmt.Errorf("%w: %w", agent.ErrRejected, err)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}
