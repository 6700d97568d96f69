// Package client is the Go client of the weft REST API (/apis/weft/v1) that
// `weft controller` serves. The weft CLI, the benchmarks and tests use it.
//
// A Client is safe for concurrent use and keeps connections alive, so a
// benchmark can issue many requests from many goroutines over a pool of
// reused connections. Every method takes a context first; requests other than
// Watch and Raw are also bounded by a per-request timeout (WithTimeout).
//
// The controller serves HTTPS: the Client verifies its certificate against
// the weft CA (WithCA; nothing skips the verification) and presents a
// credential, a bearer token (WithToken) or a client certificate
// (WithClientCertificate). Package clientconfig reads them from the CLI's
// configuration file. List follows the controller's pages (limit and
// continue; WithPageSize) and returns every object.
//
// Errors: a response with a non-2xx status is returned as a
// *v1.StatusError (use errors.As, v1.IsNotFound, v1.IsConflict, ...;
// Unauthorized 401 is a missing, wrong, expired or revoked credential,
// Forbidden 403 one whose role may not do that); a TLS handshake that fails
// over a certificate gives a *CertificateError that says what is wrong (an
// unknown CA, a name the certificate does not cover, ...); a controller
// that cannot be reached gives an error that names its URL and asks whether
// `weft controller` is running.
//
//	c, err := client.New("https://127.0.0.1:7443", client.WithCA(caPEM), client.WithToken(token))
//	if err != nil { ... }
//	defer c.Close()
//	result, obj, err := c.Apply(ctx, vpc) // "created", "configured" or "unchanged"
package client
