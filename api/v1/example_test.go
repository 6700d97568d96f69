package v1_test

import (
	"fmt"
	"time"

	v1 "github.com/weftnet/weft/api/v1"
)

func ExampleDecodeDocuments() {
	file := []byte(`apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: acme}
spec: {cidrs: [10.0.0.0/16]}
---
apiVersion: weft/v1
kind: Subnet
metadata: {name: a, tenant: acme}
spec: {vpc: main, cidr: 10.0.1.0/24}
`)
	objs, err := v1.DecodeDocuments(file)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range objs {
		v1.Default(o)
		if errs := v1.ValidateObject(o); len(errs) > 0 {
			fmt.Println(v1.RefOf(o), errs)
			continue
		}
		fmt.Println(v1.RefOf(o))
	}
	fmt.Println("gateway:", objs[1].(*v1.Subnet).Spec.Gateway)

	_, err = v1.DecodeDocuments([]byte("apiVersion: weft/v1\nkind: VPC\nmetadata: {name: main, tenant: acme}\nspc: {}\n"))
	fmt.Println(err)
	// Output:
	// vpc/acme/main
	// subnet/acme/a
	// gateway: 10.0.1.1
	// document 1 (line 1): unknown field "spc"
}

func ExampleParseSelector() {
	sel, err := v1.ParseSelector("app=web,tier in (front,edge),!legacy")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sel.Matches(map[string]string{"app": "web", "tier": "edge"}))
	fmt.Println(sel.Matches(map[string]string{"app": "web", "tier": "edge", "legacy": "yes"}))
	fmt.Println(sel)
	// Output:
	// true
	// false
	// app=web,tier in (front,edge),!legacy
}

func ExampleSetCondition() {
	var ep v1.Endpoint
	t0 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	v1.SetCondition(&ep.Status.Conditions, v1.Condition{Type: v1.ConditionPolicyProgrammed, Status: v1.ConditionTrue, ObservedGeneration: 1}, t0)
	// A newer generation programmed: the status did not change, so
	// neither does the transition time.
	changed := v1.SetCondition(&ep.Status.Conditions, v1.Condition{Type: v1.ConditionPolicyProgrammed, Status: v1.ConditionTrue, ObservedGeneration: 2}, t0.Add(time.Minute))
	c := v1.FindCondition(ep.Status.Conditions, v1.ConditionPolicyProgrammed)
	fmt.Println(changed, c.Status, c.ObservedGeneration, c.LastTransitionTime)
	// Output:
	// true True 2 2024-01-02T03:04:05Z
}
