// Package e2e holds end-to-end tests that build the weft binary and run it
// against a real controller subprocess (embedded etcd): the CLI contract
// and crash safety. It has no non-test code.
package e2e
