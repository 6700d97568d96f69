// Package observe runs traces and captures on a controller replica: it
// moves Trace and Capture objects through their phases, takes the agents'
// trace reports and capture uploads, collects a capture's packets into
// one pcapng file, serves that file, and deletes the objects when their
// TTL runs out, with their files.
//
// # Traces
//
// A new Trace is resolved (its ends, the VPC's VNI, a random token that
// marks its packets, a probe's source port) into status, phase Arming:
// package compile then puts it into the views of the hosts of its ends.
// Each agent sets its data plane up and reports Armed; when every host
// has, the trace is Running (released: compile marks it Fire) and the
// hosts report the hops their kernels saw (ReportPath), which are merged
// into status.hops (observe/trace). It completes when the path reached
// its end (every packet of a live trace) and the source host has
// reported, or when its time is up (ProbeTimeout after release, or a live
// trace's duration): a probe not seen at its end then is Dropped, with
// the last point it was seen at.
//
// # Captures
//
// A new Capture's filter is compiled once, here (observe/capture), into
// status.program, phase Running, with this replica as its collector and
// its end time: compile puts it into the views of the hosts of the
// endpoints it selects. Each host uploads its packets in one long request
// (UploadPath); any replica takes it and forwards it to the collector,
// which merges every host's stream into one pcapng file in Dir. Clients
// read it with DownloadPath, during the capture with follow=true (the file
// as it grows); a following client that goes away before the end stops
// the capture: the status becomes Completed, the capture leaves the
// views, and every host stops. A capture also stops when its duration
// has passed or its count is reached. The counts in status (packets,
// bytes, dropped, hosts) are kept current about once a second.
//
// # Replicas
//
// Every replica runs the controller; each step is a status patch that
// re-checks the phase it starts from, so of two replicas racing one does
// it. A capture's packets live on its collector's disk only; the other
// replicas forward uploads and downloads to it (Config.Advertise).
//
// # Authorization
//
// The three paths authenticate as the REST API does (Config.Authenticator;
// Config.Insecure lets requests without a credential through as cluster
// admins). A download is authorized like a read of the Capture (its own
// tenant's credentials and cluster admins; another tenant's get 403). An
// agent may post a report of a trace its host takes part in, as that
// host, and upload to a capture of a tenant with endpoints on its host,
// as that host; to an agent every other trace or capture does not exist
// (404).
package observe
