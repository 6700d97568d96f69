package fakeapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/fakeapi"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type reply struct {
	Code   int
	Reason string // of a StatusError body, else ""
	Gen    int64  // metadata.generation of an object body
}

func do(t *testing.T, hc *http.Client, method, url, contentType, body string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v struct {
		Reason   string `json:"reason"`
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(data, &v)
	return reply{resp.StatusCode, v.Reason, v.Metadata.Generation}
}

func TestREST(t *testing.T) {
	_, url := fakeapi.Serve(t)
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	api := url + "/apis/weft/v1"
	const jsonCT, yamlCT = "application/json", "application/yaml"
	steps := []struct {
		name                   string
		method, path, ct, body string
		want                   reply
	}{
		{"create tenant as YAML", "POST", "/tenants", yamlCT, "apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: acme}\n",
			reply{Code: 201, Gen: 1}},
		{"create again", "POST", "/tenants", jsonCT, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"acme"}}`,
			reply{Code: 409, Reason: apiv1.ReasonAlreadyExists}},
		{"unknown field", "POST", "/tenants", jsonCT, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"b"},"spc":{}}`,
			reply{Code: 400, Reason: apiv1.ReasonBadRequest}},
		{"wrong kind for path", "POST", "/hosts", jsonCT, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"b"}}`,
			reply{Code: 400, Reason: apiv1.ReasonBadRequest}},
		{"bad media type", "POST", "/tenants", "text/plain", `x`,
			reply{Code: 415, Reason: apiv1.ReasonUnsupportedMedia}},
		{"create in all-tenants path", "POST", "/vpcs", jsonCT, `{}`,
			reply{Code: 405, Reason: apiv1.ReasonMethodNotAllowed}},
		{"tenant of body and path differ", "POST", "/tenants/acme/vpcs", jsonCT,
			`{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v","tenant":"other"},"spec":{"cidrs":["10.0.0.0/16"]}}`,
			reply{Code: 400, Reason: apiv1.ReasonBadRequest}},
		{"tenant from path", "POST", "/tenants/acme/vpcs", jsonCT,
			`{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v"},"spec":{"cidrs":["10.0.0.0/16"]}}`,
			reply{Code: 201, Gen: 1}},
		{"status-only update keeps generation", "PUT", "/tenants/acme/vpcs/v", jsonCT,
			`{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v"},"spec":{"cidrs":["10.0.0.0/16"]},"status":{"vni":7}}`,
			reply{Code: 200, Gen: 1}},
		{"spec update bumps generation", "PUT", "/tenants/acme/vpcs/v", jsonCT,
			`{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v"},"spec":{"cidrs":["10.0.0.0/15"]}}`,
			reply{Code: 200, Gen: 2}},
		{"name of body and path differ", "PUT", "/tenants/acme/vpcs/w", jsonCT,
			`{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v"},"spec":{"cidrs":["10.0.0.0/16"]}}`,
			reply{Code: 400, Reason: apiv1.ReasonBadRequest}},
		{"host", "POST", "/hosts", jsonCT, `{"apiVersion":"weft/v1","kind":"Host","metadata":{"name":"h1"},"spec":{"underlayIP":"192.0.2.1"}}`,
			reply{Code: 201, Gen: 1}},
		{"subnet", "POST", "/tenants/acme/subnets", jsonCT,
			`{"apiVersion":"weft/v1","kind":"Subnet","metadata":{"name":"a"},"spec":{"vpc":"v","cidr":"10.0.1.0/24"}}`,
			reply{Code: 201, Gen: 1}},
		{"endpoint with an address", "POST", "/tenants/acme/endpoints", jsonCT,
			`{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"e1"},"spec":{"subnet":"a","host":"h1","ip":"10.0.1.9"}}`,
			reply{Code: 201, Gen: 1}},
		{"address taken", "POST", "/tenants/acme/endpoints", jsonCT,
			`{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"e2"},"spec":{"subnet":"a","host":"h1","ip":"10.0.1.9"}}`,
			reply{Code: 409, Reason: apiv1.ReasonConflict}},
		{"unknown plural", "GET", "/gadgets", "", "", reply{Code: 404, Reason: apiv1.ReasonNotFound}},
		{"cluster kind under a tenant", "GET", "/tenants/acme/hosts", "", "", reply{Code: 404, Reason: apiv1.ReasonNotFound}},
		{"bad watch revision", "GET", "/vpcs?watch=true&resourceVersion=x", "", "", reply{Code: 400, Reason: apiv1.ReasonBadRequest}},
		{"delete with dependents", "DELETE", "/hosts/h1", "", "", reply{Code: 409, Reason: apiv1.ReasonConflict}},
		{"delete", "DELETE", "/tenants/acme/endpoints/e1", "", "", reply{Code: 200, Gen: 1}},
		{"delete again", "DELETE", "/tenants/acme/endpoints/e1", "", "", reply{Code: 404, Reason: apiv1.ReasonNotFound}},
	}
	for _, st := range steps {
		got := do(t, hc, st.method, api+st.path, st.ct, st.body)
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s: %s %s (-want +got):\n%s", st.name, st.method, st.path, diff)
		}
	}
	if got := do(t, hc, "GET", url+"/healthz", "", ""); got.Code != 200 {
		t.Errorf("/healthz: %d", got.Code)
	}
}
