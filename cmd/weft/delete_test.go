package main

import (
	"testing"
)

func TestDeleteFile(t *testing.T) {
	h := newHarness(t)
	h.seed()
	deleted := lines(
		"endpoint/acme/web-1 deleted",
		"endpoint/acme/db-1 deleted",
		"securitypolicy/acme/web-in deleted",
		"subnet/acme/a deleted",
		"vpc/acme/main deleted",
		"qosclass/acme/gold deleted",
		"host/h1 deleted",
		"tenant/acme deleted",
	)
	// Reverse dependency order: every delete succeeds.
	checkResult(t, h.run("delete", "-f", "testdata/network.yaml"), 0, deleted, "")

	// Again: everything is gone.
	r := h.run("delete", "-f", "testdata/network.yaml")
	if r.code != 1 || r.stdout != "" {
		t.Errorf("second delete: exit %d stdout %q, want 1 and nothing", r.code, r.stdout)
	}
	wantErr := lines(
		"error: endpoint/acme/web-1 not found",
		"error: endpoint/acme/db-1 not found",
		"error: securitypolicy/acme/web-in not found",
		"error: subnet/acme/a not found",
		"error: vpc/acme/main not found",
		"error: qosclass/acme/gold not found",
		"error: host/h1 not found",
		"error: tenant/acme not found",
		"error: 8 of 8 objects were not deleted",
	)
	checkResult(t, r, 1, "", wantErr)

	// --ignore-not-found: said, but not an error.
	checkResult(t, h.run("delete", "-f", "testdata/network.yaml", "--ignore-not-found"), 0,
		lines(
			"endpoint/acme/web-1 not found",
			"endpoint/acme/db-1 not found",
			"securitypolicy/acme/web-in not found",
			"subnet/acme/a not found",
			"vpc/acme/main not found",
			"qosclass/acme/gold not found",
			"host/h1 not found",
			"tenant/acme not found",
		), "")
}

func TestDeleteOne(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for _, tc := range []struct {
		name string
		args []string
		want result
	}{
		{"has dependents", []string{"delete", "vpc", "main", "--tenant", "acme"}, result{code: 1,
			stderr: lines("error: vpc/acme/main is still in use by 2 object(s); delete them first",
				"  depended on by securitypolicy/acme/web-in", "  depended on by subnet/acme/a")}},
		{"endpoint", []string{"delete", "ep", "web-1", "--tenant", "acme"}, result{stdout: "endpoint/acme/web-1 deleted\n"}},
		{"not found", []string{"delete", "ep", "web-1", "--tenant", "acme"}, result{code: 1,
			stderr: "error: endpoint/acme/web-1 not found\n"}},
		{"not found, ignored", []string{"delete", "ep", "web-1", "--tenant", "acme", "--ignore-not-found"},
			result{stdout: "endpoint/acme/web-1 not found\n"}},
		{"cluster-scoped", []string{"delete", "tenant", "beta"}, result{code: 1,
			stderr: lines("error: tenant/beta is still in use by 1 object(s); delete them first", "  depended on by vpc/beta/main")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkResult(t, h.run(tc.args...), tc.want.code, tc.want.stdout, tc.want.stderr)
		})
	}
}
