package view_test

import (
	"fmt"

	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// A Decoder decodes the resources of a view one after the other into the
// same memory: read what you need from each value before the next call.
func ExampleDecoder() {
	var res []wire.Resource
	for _, v := range []any{
		&view.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}}},
		&view.Endpoint{Tenant: "acme", Name: "web", VNI: 100, Subnet: "a", IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a"},
	} {
		r, err := view.Encode(v)
		if err != nil {
			panic(err)
		}
		res = append(res, r)
	}
	var dec view.Decoder
	for _, r := range res {
		v, err := dec.Decode(r)
		if err != nil {
			panic(err)
		}
		switch o := v.(type) {
		case *view.VPC:
			fmt.Println("vpc", view.ID(o.Tenant, o.Name), o.VNI, o.Subnets[0].CIDR)
		case *view.Endpoint:
			fmt.Println("endpoint", view.ID(o.Tenant, o.Name), o.IP)
		}
	}
	// Output:
	// vpc acme/main 100 10.0.1.0/24
	// endpoint acme/web 10.0.1.10
}
