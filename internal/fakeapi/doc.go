// Package fakeapi is a TEST DOUBLE, not a controller: an in-memory HTTP
// server that speaks the weft/v1 REST API (/apis/weft/v1) closely enough to
// test the client package and the weft CLI without etcd or a real
// controller. Tests of the real controller live with the controller.
//
// What it models: the paths (cluster-scoped and tenant-scoped kinds,
// all-tenant lists), create/get/list/update/delete with their status codes
// and StatusError bodies, resourceVersions (one global revision, like
// etcd), optimistic concurrency on update, uid/generation/creationTimestamp,
// defaults and validation (api/v1 Default, ValidateCreate and
// ValidateUpdate, with references looked up in the store), dependents
// blocking a delete, label selectors, controller-owned status (VPC VNI,
// endpoint address allocation, MAC and netns), and watches
// (newline-delimited JSON events, flushed per event, replay from a
// resourceVersion, 410 Gone below a compaction point, ERROR events).
//
// What it does not model: etcd, agents (Host liveness and Endpoint phases
// stay as created), DELETED events when an object's labels stop matching a
// watch's selector, authentication, /metrics and /openapi.json.
//
// Typical use in a test:
//
//	fake, url := fakeapi.Serve(t)
//	c, _ := client.New(url)
package fakeapi
