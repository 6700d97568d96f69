// Package learn is the agent's cache of remote endpoint locations, filled
// on demand the way ARP fills a neighbour table, and the bookkeeping of the
// lookups in flight.
//
// A Cache does no I/O and starts no goroutines; its caller (the agent)
// feeds it events with the current time and performs what it answers:
//
//   - Miss: the data plane wants VNI/IP. The cache answers with the
//     location it holds (to reinstall), "negative" (the controller said no
//     such endpoint, within NegativeTTL), "pending" (a lookup is in flight)
//     or "queued" (a lookup must be sent).
//   - Due: the queries to send now — queued ones and those whose last send
//     timed out (RetryTimeout) and have tries left (MaxTries); lookups out
//     of tries are given up (the next miss starts over).
//   - Answer: a controller answer to one of our queries. A found answer is
//     cached for min(TTL, its TTL) and installed (Learn); a not-found one is
//     cached as negative and removes a location cached before (Forget).
//     Answers to queries we did not send, and answers older (by epoch) than
//     what is cached, are ignored.
//   - Invalidate: the controller says a cached endpoint moved (Learn the new
//     location) or is gone (Forget); applied only if its epoch is newer than
//     the cached one, so duplicates and reordering are harmless.
//   - Expire: locations past their TTL (Forget): the backstop for a lost
//     invalidation.
//
// A Cache is not safe for concurrent use; the agent guards it with a mutex.
package learn
