package rest

import (
	"encoding/json"
	"reflect"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/hostkey"
)

// openAPI builds the OpenAPI 3 document of the API from the Go types, so
// that it cannot drift from what the server decodes.
func openAPI(version string) []byte {
	schemas := map[string]any{}
	paths := map[string]any{}
	errRef := map[string]any{"$ref": "#/components/schemas/Status"}
	schemas["Status"] = schemaOf(reflect.TypeOf(apiv1.StatusError{}), schemas)
	errResp := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": errRef}}}
	for _, k := range apiv1.Kinds() {
		t := reflect.TypeOf(k.New()).Elem()
		schemas[k.Kind] = schemaOf(t, schemas)
		ref := map[string]any{"$ref": "#/components/schemas/" + k.Kind}
		one := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": ref}}}
		list := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{
			"type": "object", "properties": map[string]any{
				"apiVersion": map[string]any{"type": "string"}, "kind": map[string]any{"type": "string"},
				"metadata": map[string]any{"type": "object", "properties": map[string]any{
					"resourceVersion": map[string]any{"type": "string"}, "continue": map[string]any{"type": "string"}}},
				"items": map[string]any{"type": "array", "items": ref},
			}}}}}
		op := func(summary string, ok string, body bool, resp map[string]any, params ...map[string]any) map[string]any {
			o := map[string]any{"summary": summary, "tags": []string{k.Kind},
				"responses": map[string]any{ok: withDesc(resp, summary), "default": errResp}}
			if body {
				o["requestBody"] = map[string]any{"required": true, "content": map[string]any{
					"application/json": map[string]any{"schema": ref}, "application/yaml": map[string]any{"schema": ref}}}
			}
			if len(params) > 0 {
				o["parameters"] = params
			}
			return o
		}
		sel := map[string]any{"name": "labelSelector", "in": "query", "schema": map[string]any{"type": "string"}}
		fields := map[string]any{"name": "fieldSelector", "in": "query", "schema": map[string]any{"type": "string"},
			"description": "field=value, field!=value, comma-separated; fields: " + strings.Join(apiv1.SelectableFields(k.Kind), ", ")}
		dry := map[string]any{"name": "dryRun", "in": "query", "schema": map[string]any{"type": "string", "enum": []string{"All"}},
			"description": "validate, default, admit and count quota, store nothing; the answer is what would be stored"}
		watch := map[string]any{"name": "watch", "in": "query", "schema": map[string]any{"type": "boolean"}, "description": "stream newline-delimited JSON events"}
		rv := map[string]any{"name": "resourceVersion", "in": "query", "schema": map[string]any{"type": "string"}, "description": "watch from this revision (410 if compacted)"}
		limit := map[string]any{"name": "limit", "in": "query", "schema": map[string]any{"type": "integer"}, "description": "the most objects of a page (the server caps it)"}
		cont := map[string]any{"name": "continue", "in": "query", "schema": map[string]any{"type": "string"}, "description": "the previous page's metadata.continue"}
		coll, item := "/apis/weft/v1/"+k.Plural, "/apis/weft/v1/"+k.Plural+"/{name}"
		if k.Namespaced {
			paths[coll] = map[string]any{"get": op("list "+k.Plural+" of all tenants (those the credential may see)", "200", false, list, sel, fields, watch, rv, limit, cont)}
			coll, item = "/apis/weft/v1/tenants/{tenant}/"+k.Plural, "/apis/weft/v1/tenants/{tenant}/"+k.Plural+"/{name}"
		}
		paths[coll] = map[string]any{
			"get":  op("list "+k.Plural, "200", false, list, sel, fields, watch, rv, limit, cont),
			"post": op("create a "+k.Kind, "201", true, one, dry),
		}
		patch := op("change a "+k.Kind+" with a JSON merge patch (RFC 7386), a JSON patch (RFC 6902), or apply a manifest server-side (created if absent, else merged)", "200", false, one, dry)
		patch["requestBody"] = map[string]any{"required": true, "content": map[string]any{
			apiv1.MergePatchType: map[string]any{"schema": map[string]any{"type": "object"}},
			apiv1.JSONPatchType:  map[string]any{"schema": map[string]any{"type": "array", "items": map[string]any{"type": "object"}}},
			apiv1.ApplyPatchType: map[string]any{"schema": ref},
		}}
		paths[item] = map[string]any{
			"get":    op("read a "+k.Kind, "200", false, one),
			"put":    op("replace a "+k.Kind+"'s labels, annotations and spec", "200", true, one, dry),
			"patch":  patch,
			"delete": op("delete a "+k.Kind, "200", false, one, dry),
		}
		if st, ok := t.FieldByName("Status"); ok {
			patch := op("change some fields of a "+k.Kind+"'s status with a JSON merge patch (RFC 7386): null removes a field, fields not named are kept", "200", false, one)
			patch["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				apiv1.MergePatchType: map[string]any{"schema": map[string]any{
					"type": "object", "properties": map[string]any{"status": schemaOf(st.Type, schemas)}, "additionalProperties": false,
				}}}}
			paths[item+"/status"] = map[string]any{
				"put":   op("replace a "+k.Kind+"'s status", "200", true, one),
				"patch": patch,
			}
		}
	}
	credentialPaths(paths, schemas, errResp)
	doc := map[string]any{
		"openapi":  "3.0.3",
		"info":     map[string]any{"title": "weft API", "version": version},
		"paths":    paths,
		"security": []any{map[string]any{"bearer": []string{}}, map[string]any{"clientCertificate": []string{}}},
		"components": map[string]any{"schemas": schemas, "securitySchemes": map[string]any{
			"bearer":            map[string]any{"type": "http", "scheme": "bearer", "description": "a weft token, weft_<id>_<secret>"},
			"clientCertificate": map[string]any{"type": "mutualTLS", "description": "a client certificate from the cluster CA"},
		}},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
}

// credentialPaths describes the credential endpoints (credentials.go).
func credentialPaths(paths, schemas map[string]any, errResp map[string]any) {
	body := func(t reflect.Type) map[string]any {
		schemas[t.Name()] = schemaOf(t, schemas)
		return map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + t.Name()}}}}
	}
	op := func(summary, ok string, req, resp map[string]any) map[string]any {
		o := map[string]any{"summary": summary, "tags": []string{"credentials"},
			"responses": map[string]any{ok: withDesc(resp, summary), "default": errResp}}
		if req != nil {
			o["requestBody"] = withDesc(req, summary)
			o["requestBody"].(map[string]any)["required"] = true
		}
		return o
	}
	token, newToken := body(reflect.TypeOf(auth.Token{})), body(reflect.TypeOf(auth.NewToken{}))
	tokens := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{
		"type": "object", "properties": map[string]any{"items": map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/Token"}}}}}}}
	pemBody := map[string]any{"content": map[string]any{"application/x-pem-file": map[string]any{"schema": map[string]any{"type": "string"}}}}
	paths["/apis/weft/v1/tokens"] = map[string]any{
		"post": op("create a token (cluster-admin); its secret is in this answer only", "201", body(reflect.TypeOf(auth.TokenRequest{})), newToken),
		"get":  op("list the tokens, without secrets (cluster-admin)", "200", nil, tokens),
	}
	paths["/apis/weft/v1/tokens/{id}"] = map[string]any{"delete": op("revoke a token (cluster-admin)", "200", nil, token)}
	paths["/apis/weft/v1/enroll"] = map[string]any{"post": op("enrol a host with its one-time bootstrap token: its key, agent token and the CA",
		"200", body(reflect.TypeOf(hostkey.EnrollRequest{})), body(reflect.TypeOf(hostkey.Enrolment{})))}
	paths["/apis/weft/v1/certificates"] = map[string]any{"post": op("sign a CSR into a client certificate (cluster-admin)",
		"201", body(reflect.TypeOf(certRequest{})), body(reflect.TypeOf(certAnswer{})))}
	ca := op("the cluster CA certificate (no credential needed)", "200", nil, pemBody)
	ca["security"] = []any{}
	paths["/apis/weft/v1/ca"] = map[string]any{"get": ca}
}

func withDesc(m map[string]any, d string) map[string]any {
	out := map[string]any{"description": d}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// schemaOf describes a Go type as an OpenAPI schema, following json tags.
func schemaOf(t reflect.Type, named map[string]any) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), named)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), named)}
	case reflect.Struct:
		props := map[string]any{}
		addFields(t, props, named)
		return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	}
	return map[string]any{}
}

func addFields(t reflect.Type, props map[string]any, named map[string]any) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && (name == "" || strings.Contains(opts, "inline")) {
			addFields(f.Type, props, named)
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type, named)
	}
}
