package intent_test

import (
	"fmt"

	"sigs.k8s.io/yaml"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/intent"
)

// The intent "shop" talks to the database and asks for low latency: it
// owns a policy that isolates its egress to the database and a class of
// the highest priority.
func ExampleCompile() {
	in := &apiv1.AppIntent{
		Metadata: apiv1.ObjectMeta{Name: "shop", Tenant: "acme", UID: "8d3e-shop"},
		Spec: apiv1.AppIntentSpec{
			VPC:      "main",
			Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Latency:  apiv1.LatencyLow,
			TalksTo: []apiv1.IntentDestination{{
				PolicyPeer: apiv1.PolicyPeer{Selector: &apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
				Ports:      []apiv1.PolicyPort{{Port: 5432}},
			}},
		},
	}
	apiv1.Default(in)
	for _, o := range intent.Compile(in) {
		b, err := yaml.Marshal(o)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("---\n%s", b)
	}
	for _, m := range intent.Explain(in) {
		fmt.Printf("%s → %s: %s\n", m.Need, m.Object, m.Rule)
	}
	// Output:
	// ---
	// apiVersion: weft/v1
	// kind: SecurityPolicy
	// metadata:
	//   name: appintent-shop
	//   ownerReferences:
	//   - kind: AppIntent
	//     name: shop
	//     uid: 8d3e-shop
	//   tenant: acme
	// spec:
	//   egress:
	//   - peers:
	//     - selector:
	//         matchLabels:
	//           app: db
	//     ports:
	//     - port: 5432
	//       protocol: TCP
	//   selector:
	//     matchLabels:
	//       app: shop
	//   vpc: main
	// ---
	// apiVersion: weft/v1
	// kind: QoSClass
	// metadata:
	//   name: appintent-shop
	//   ownerReferences:
	//   - kind: AppIntent
	//     name: shop
	//     uid: 8d3e-shop
	//   tenant: acme
	// spec:
	//   dscp: 46
	//   priority: 0
	// selector: app=shop in VPC main → SecurityPolicy/appintent-shop (not written): applies to app=shop in VPC main
	// talksTo[0]: app=db TCP 5432 → SecurityPolicy/appintent-shop (not written): egress[0]: to app=db on TCP 5432
	// exposes: none → -: ingress left alone
	// selector: app=shop in VPC main → QoSClass/appintent-shop (not written): the class of the selected endpoints that name none
	// latency: low → QoSClass/appintent-shop (not written): priority: 0, dscp: 46
}
