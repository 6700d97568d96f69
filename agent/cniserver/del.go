package cniserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/agent/cnirpc"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

// detachWait bounds how long a DEL waits for the agent to detach the
// endpoint it deleted (the runtime removes the namespace next).
const detachWait = 5 * time.Second

// find returns the endpoint of c's attachment, nil if there is none: the
// one the index knows, else the one its name says in the configured
// tenant (an index that missed it: it was made before the last listing).
func (s *Server) find(ctx context.Context, c *call) (*apiv1.Endpoint, error) {
	if err := s.waitAdopted(ctx); err != nil {
		return nil, err
	}
	if ep := s.indexed(c.att); ep != nil {
		return ep, nil
	}
	sel, err := c.nc.selection(s.cfg.Default)
	if err != nil {
		return nil, nil // it can have made none
	}
	o, err := s.cfg.API.Get(ctx, apiv1.KindEndpoint, sel.tenant, c.att.endpointName())
	switch {
	case apiv1.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case c.att.owns(o.(*apiv1.Endpoint)):
		return o.(*apiv1.Endpoint), nil
	}
	return nil, nil
}

// attachments lists the endpoints of CNI attachments and of the warm
// pool on this host: the controller selects this host's (spec.host), so
// that the answer does not grow with the cluster.
func (s *Server) attachments(ctx context.Context) ([]*apiv1.Endpoint, error) {
	objs, _, err := s.cfg.API.List(ctx, apiv1.KindEndpoint, "", "", client.WithFieldSelector("spec.host="+s.cfg.Host))
	if err != nil {
		return nil, fmt.Errorf("list this host's endpoints: %w", err)
	}
	var eps []*apiv1.Endpoint
	for _, o := range objs {
		ep := o.(*apiv1.Endpoint)
		if an := ep.Metadata.Annotations; ep.Spec.Host == s.cfg.Host && (an[AnnotationContainerID] != "" || an[AnnotationPool] != "") {
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

// del detaches the container: it deletes the attachment's endpoint and
// waits (a while) for the agent to detach it. An attachment that does not
// exist (never added, deleted before) is not an error.
func (s *Server) del(ctx context.Context, req *cnirpc.Request) error {
	c, err := parse(req)
	if err != nil {
		return err
	}
	ep, err := s.find(ctx, c)
	if err != nil {
		return cniError(types.ErrTryAgainLater, "find the attachment's endpoint", err)
	}
	if ep == nil {
		return nil
	}
	if err := s.remove(ctx, ep); err != nil {
		return cniError(types.ErrTryAgainLater, "delete the endpoint", err)
	}
	s.waitDetached(ctx, ep)
	return nil
}

// waitDetached waits until the agent no longer reports ep (its Gone
// report), at most detachWait.
func (s *Server) waitDetached(ctx context.Context, ep *apiv1.Endpoint) {
	id := ep.Metadata.Tenant + "/" + ep.Metadata.Name
	ctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if r, ok := s.cfg.Tap.Written(id); !ok || r.UID != ep.Metadata.UID {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check verifies the attachment: its endpoint exists, the agent reports
// it Ready and programmed at its generation, and the interface in the
// container's namespace has the endpoint's address (and the previous
// result's, if the runtime passed one).
func (s *Server) check(ctx context.Context, req *cnirpc.Request) error {
	c, err := parse(req)
	if err != nil {
		return err
	}
	ep, err := s.find(ctx, c)
	switch {
	case err != nil:
		return cniError(types.ErrTryAgainLater, "find the attachment's endpoint", err)
	case ep == nil:
		return types.NewError(types.ErrUnknownContainer, "no endpoint for "+c.att.String(), "")
	}
	id := ep.Metadata.Tenant + "/" + ep.Metadata.Name
	r, ok := s.cfg.Tap.Written(id)
	if !ok || r.UID != ep.Metadata.UID || r.Generation < ep.Metadata.Generation || !programmed(r) {
		return types.NewError(types.ErrInternal, fmt.Sprintf("endpoint %s is not Ready and programmed on this host", id), r.Message)
	}
	want, err := netip.ParseAddr(ep.Status.IP)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("endpoint %s has no address", id), ep.Status.IP)
	}
	if c.nc.RawPrevResult != nil {
		if err := checkPrev(c.nc, want); err != nil {
			return err
		}
	}
	if err := checkInside(req.Netns, req.IfName, want); err != nil {
		return types.NewError(types.ErrInternal, "the container's interface is not as attached", err.Error())
	}
	return nil
}

// checkPrev compares the previous result's address with the endpoint's.
func checkPrev(nc *NetConf, want netip.Addr) error {
	b, err := json.Marshal(nc.RawPrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "encode prevResult", err.Error())
	}
	prev, err := types100.NewResult(b)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	r, err := types100.GetResult(prev)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap() == want {
			return nil
		}
	}
	return types.NewError(types.ErrInternal, "prevResult does not hold the endpoint's address "+want.String(), "")
}

// checkInside verifies that ifName in the namespace at nsPath is up and
// has address want.
func checkInside(nsPath, ifName string, want netip.Addr) error {
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifName, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is down", ifName)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", ifName, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == want {
			return nil
		}
	}
	return fmt.Errorf("interface %s does not have %s", ifName, want)
}

// gc deletes the endpoints of the network's attachments on this host that
// are not among the runtime's valid attachments.
func (s *Server) gc(ctx context.Context, req *cnirpc.Request) error {
	nc, err := parseNetConf(req.Config)
	if err != nil {
		return err
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range nc.ValidAttachments {
		valid[a] = true
	}
	eps, err := s.attachments(ctx)
	if err != nil {
		return cniError(types.ErrTryAgainLater, "list this host's attachments", err)
	}
	var failed []string
	for _, ep := range eps {
		an := ep.Metadata.Annotations
		if an[AnnotationContainerID] == "" || an[AnnotationNetwork] != nc.Name || valid[types.GCAttachment{ContainerID: an[AnnotationContainerID], IfName: an[AnnotationIfName]}] {
			continue
		}
		if err := s.remove(ctx, ep); err != nil {
			failed = append(failed, fmt.Sprintf("%s/%s: %v", ep.Metadata.Tenant, ep.Metadata.Name, err))
			continue
		}
		s.log.Info("stale attachment collected", "endpoint", ep.Metadata.Tenant+"/"+ep.Metadata.Name, "container", an[AnnotationContainerID], "ifname", an[AnnotationIfName])
	}
	if len(failed) > 0 {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("GC: %d endpoints not deleted", len(failed)), fmt.Sprint(failed))
	}
	return nil
}
