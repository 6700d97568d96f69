// Package restreport implements agent.Reporter over the controller's REST
// API (package client): it registers the agent's Host if none exists yet,
// and writes each local endpoint's status.netns, status.phase,
// status.message and status.conditions (PolicyProgrammed, QoSProgrammed,
// with the endpoint's generation as observedGeneration) with a merge patch
// of the status subresource (client.PatchStatus: PATCH
// /apis/weft/v1/tenants/{tenant}/endpoints/{name}/status), leaving the
// rest of the status (address, MAC, VNI, identity: the controller's) as it
// is. The conditions are the agent's: no other writer sets conditions of
// an endpoint, and the patch replaces the list.
//
//	c, err := client.New("http://controller:7443")
//	...
//	cfg.Reporter = restreport.New(c)
package restreport
