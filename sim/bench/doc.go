// Package bench holds the harnesses behind `weft bench NAME`: each starts
// the real parts it measures (a controller with embedded etcd, real HTTP),
// measures a baseline in the same run where one exists, prints progress
// while it runs and returns a report that BENCHMARKS.md quotes.
//
// Every percentile a report gives is by nearest rank: the p-th percentile
// of n values is the ⌈p·n/100⌉-th smallest (the smallest for p = 0), and
// a histogram's is the bucket that value falls in. Load generators that
// must not share the measured process run in child processes of the same
// binary (ChildRoles; the protocol is package sim's).
package bench
