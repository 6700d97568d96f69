// Package client is the Go client of the weft REST API (/apis/weft/v1) that
// `weft controller` serves. The weft CLI, the benchmarks and tests use it.
//
// A Client is safe for concurrent use and keeps connections alive, so a
// benchmark can issue many requests from many goroutines over a pool of
// reused connections. Every method takes a context first; requests other than
// Watch and Raw are also bounded by a per-request timeout (WithTimeout).
//
// Errors: a response with a non-2xx status is returned as a
// *v1.StatusError (use errors.As, v1.IsNotFound, v1.IsConflict, ...); a
// controller that cannot be reached gives an error that names its URL and
// asks whether `weft controller` is running.
//
//	c, err := client.New("http://127.0.0.1:7443")
//	if err != nil { ... }
//	defer c.Close()
//	result, obj, err := c.Apply(ctx, vpc) // "created", "configured" or "unchanged"
package client
