package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/flowagg"
)

func (a *app) newFlowsCmd() *cobra.Command {
	var (
		endpoint, output string
		top              int
	)
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Show a tenant's top talkers (sampled flow summaries)",
		Long: `Show the flows of a tenant that moved the most bytes recently: source and
destination (address, port, endpoint), protocol, bytes, packets, verdict
(allow, drop, partial, with the drop reason) and duration.

Agents sample 1 in N flows (weft agent --flow-sampling) by a hash of the
5-tuple, so a sampled flow is counted whole; they report each interval's
largest flows to the controller, which keeps them for a few minutes. A flow
seen by the hosts of both its ends counts once. Only the tenant's own flows
are shown, even where tenants use the same addresses.

--endpoint keeps the flows one of whose ends is that endpoint.`,
		Example: `  weft flows --tenant acme
  weft flows --tenant acme --endpoint web-1 --top 5 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.tenant == "" {
				return usageErrorf("flows are a tenant's: pass --tenant TENANT (or set WEFT_TENANT)")
			}
			if top < 1 || top > 1000 {
				return usageErrorf("--top %d: want 1 to 1000", top)
			}
			if err := checkFormat(output); err != nil {
				return err
			}
			l, err := a.flows(cmd.Context(), a.tenant, endpoint, top)
			if err != nil {
				return err
			}
			return a.printFlows(l, output)
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only the flows of this endpoint of the tenant")
	cmd.Flags().IntVar(&top, "top", 10, "how many flows, the largest first")
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table, json or yaml")
	return cmd
}

// flows asks the controller for the tenant's top talkers.
func (a *app) flows(ctx context.Context, tenant, endpoint string, top int) (*flowagg.FlowList, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	q := url.Values{"top": {strconv.Itoa(top)}}
	if endpoint != "" {
		q.Set("endpoint", endpoint)
	}
	path := "/apis/weft/v1/tenants/" + url.PathEscape(tenant) + "/flows?" + q.Encode()
	resp, err := cl.Raw(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var se apiv1.StatusError
		if json.Unmarshal(body, &se) == nil && se.Message != "" {
			return nil, &se
		}
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	var l flowagg.FlowList
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return &l, nil
}

func (a *app) printFlows(l *flowagg.FlowList, format string) error {
	switch format {
	case formatJSON, formatYAML:
		b, err := json.MarshalIndent(l, "", "  ")
		if err == nil && format == formatYAML {
			b, err = yaml.JSONToYAML(b)
		}
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(ensureNewline(b))
		return err
	}
	end := func(ep, ip string, port uint16) string {
		s := ip
		if port != 0 {
			s += ":" + strconv.Itoa(int(port))
		}
		if ep != "" {
			s = ep + " (" + s + ")"
		}
		return s
	}
	rows := make([][]string, 0, len(l.Items))
	for i, f := range l.Items {
		verdict := f.Verdict
		if f.Reason != "" {
			verdict += " (" + f.Reason + ")"
		}
		dst := end(f.DstEndpoint, f.Dst, f.DstPort)
		if f.Proto == "icmp" { // the port is type<<8|code
			dst = end(f.DstEndpoint, f.Dst, 0) + fmt.Sprintf(" type %d code %d", f.DstPort>>8, f.DstPort&0xff)
		}
		rows = append(rows, []string{strconv.Itoa(i + 1), end(f.SrcEndpoint, f.Src, f.SrcPort), dst,
			f.Proto, strconv.FormatUint(f.Bytes, 10), strconv.FormatUint(f.Packets, 10), verdict, f.Duration, f.VPC})
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(a.stdout, "No flows of tenant %s in the last %s.\n", l.Tenant, l.Window)
		return err
	}
	return writeTable(a.stdout, []string{"#", "SOURCE", "DESTINATION", "PROTO", "BYTES", "PACKETS", "VERDICT", "DURATION", "VPC"}, rows)
}
