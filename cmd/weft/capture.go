package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newCaptureCmd() *cobra.Command {
	var (
		spec              apiv1.CaptureSpec
		selector          string
		name, out, output string
	)
	cmd := &cobra.Command{
		Use:   "capture (--endpoint E | --vpc V | -l SELECTOR) -w FILE.pcapng",
		Short: "Capture a tenant's packets on the hosts and write them as one pcapng file",
		Long: `Capture the packets of a tenant's endpoints — one endpoint, every endpoint of
a VPC, or those a label selector picks — on the hosts that hold them, and
write them as one pcapng file (Wireshark and tshark read it): one interface
per host and interface, each packet's comment naming its host, endpoint and
direction (and the drop reason with --dropped-only), in time order.

The command creates a Capture object and streams its packets into the file
until the capture ends: after --duration, after --count packets, or when the
command is interrupted, which stops the capture on every host. The --filter
expression (pcap-filter syntax, as tcpdump takes) is compiled once by the
controller; each host records at most --rate packets a second (what exceeds
it is counted, not recorded). Only the tenant's own packets are recorded,
even where tenants use the same addresses. The Capture object and its
packets are kept for --ttl (default 10m).

-w - writes the file to standard output (and the summary to standard error).`,
		Example: `  weft capture --tenant acme --endpoint web-1 -w web-1.pcapng
  weft capture --tenant acme --vpc main --filter 'tcp port 80' --duration 30s -w main.pcapng
  weft capture --tenant acme -l app=db --dropped-only -w drops.pcapng
  weft capture --tenant acme --endpoint web-1 --count 100 -w - | tshark -r -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.tenant == "" {
				return usageErrorf("captures are a tenant's: pass --tenant TENANT (or set WEFT_TENANT)")
			}
			if selector != "" {
				sel, err := apiv1.ParseSelector(selector)
				if err != nil {
					return usageErrorf("-l %q: %v", selector, err)
				}
				spec.Selector = &sel
			}
			n := 0
			for _, set := range []bool{spec.Endpoint != "", spec.VPC != "", spec.Selector != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				return usageErrorf("pass exactly one of --endpoint, --vpc and -l")
			}
			if out == "" {
				return usageErrorf("pass -w FILE (or -w - for standard output)")
			}
			if err := checkFormat(output); err != nil {
				return err
			}
			if name == "" {
				name = randomName("capture")
			}
			cp := &apiv1.Capture{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindCapture},
				Metadata: apiv1.ObjectMeta{Name: name, Tenant: a.tenant}, Spec: spec}
			cl, err := a.client()
			if err != nil {
				return err
			}
			w, summary := io.Writer(a.stdout), a.stderr
			if out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return fmt.Errorf("capture: %w", err)
				}
				defer f.Close()
				w, summary = f, a.stdout
			}
			if err := a.runCapture(cmd.Context(), cl, cp, w); err != nil {
				return err
			}
			if f, ok := w.(*os.File); ok {
				if err := f.Close(); err != nil {
					return fmt.Errorf("capture: %w", err)
				}
			}
			// The final counts, also after an interrupt.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 5*time.Second)
			defer cancel()
			o, err := a.finalCapture(ctx, cl, cp)
			if err != nil {
				return err
			}
			return a.printCapture(summary, o, out, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Endpoint, "endpoint", "", "capture this endpoint of the tenant")
	f.StringVar(&spec.VPC, "vpc", "", "capture every endpoint of this VPC of the tenant")
	f.StringVarP(&selector, "selector", "l", "", "capture the tenant's endpoints with these labels (k=v,k2 in (a,b))")
	f.StringVar(&spec.Filter, "filter", "", "pcap-filter expression, e.g. 'tcp port 80'")
	f.StringVar(&spec.Direction, "direction", "", "both (the default), in (to the endpoints) or out (from them)")
	f.BoolVar(&spec.DroppedOnly, "dropped-only", false, "record only the packets the data plane dropped, with the reason")
	f.BoolVar(&spec.Underlay, "underlay", false, "also record the VPC's encapsulated packets on the hosts' underlay")
	f.StringVar(&spec.Duration, "duration", "", "stop after this long (default 30s, at most 1h)")
	f.IntVar(&spec.Count, "count", 0, "stop after this many packets (default 10000)")
	f.IntVar(&spec.Snaplen, "snaplen", 0, "bytes kept of each packet (default 65535)")
	f.IntVar(&spec.RatePerHost, "rate", 0, "packets a second each host records at most (default 1000)")
	f.StringVar(&spec.TTL, "ttl", "", "how long the Capture object and its packets are kept (default 10m)")
	f.StringVar(&name, "name", "", "name of the Capture object (default: capture- and a random suffix)")
	f.StringVarP(&out, "write", "w", "", "pcapng file to write (- for standard output)")
	f.StringVarP(&output, "output", "o", formatTable, "format of the summary: table, json or yaml")
	return cmd
}

// runCapture creates cp and copies its pcapng stream to w until the
// capture ends or ctx does (which stops it on every host).
func (a *app) runCapture(ctx context.Context, cl *client.Client, cp *apiv1.Capture, w io.Writer) error {
	if _, err := cl.Create(ctx, cp); err != nil {
		return err
	}
	path := "/apis/weft/v1/tenants/" + url.PathEscape(cp.Metadata.Tenant) + "/captures/" + url.PathEscape(cp.Metadata.Name) + "/pcapng?follow=true"
	resp, err := cl.Raw(ctx, http.MethodGet, path, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var se apiv1.StatusError
		if json.Unmarshal(body, &se) == nil && se.Message != "" {
			return &se
		}
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("capture %s: read the packets: %w", cp.Metadata.Name, err)
	}
	return nil
}

// finalCapture waits, briefly, until the capture's status says it ended.
func (a *app) finalCapture(ctx context.Context, cl *client.Client, cp *apiv1.Capture) (*apiv1.Capture, error) {
	for {
		o, err := cl.Get(ctx, apiv1.KindCapture, cp.Metadata.Tenant, cp.Metadata.Name)
		if err != nil {
			return nil, fmt.Errorf("capture %s: %w", cp.Metadata.Name, err)
		}
		got := o.(*apiv1.Capture)
		if got.Status.Phase == apiv1.PhaseCompleted || got.Status.Phase == apiv1.PhaseFailed {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, nil // the counts so far
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *app) printCapture(w io.Writer, cp *apiv1.Capture, file, format string) error {
	if format != formatTable {
		data, err := marshalObject(cp, format)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	s := cp.Status
	if s.Phase == apiv1.PhaseFailed {
		return errors.New("capture " + cp.Metadata.Name + " failed: " + s.Message)
	}
	if file == "-" {
		file = "standard output"
	}
	_, err := fmt.Fprintf(w, "Capture %s: %d packets (%d bytes) from hosts %s, %d not recorded; written to %s. %s\n",
		cp.Metadata.Name, s.Packets, s.Bytes, orNone(strings.Join(s.Hosts, ",")), s.Dropped, file, s.Message)
	return err
}
