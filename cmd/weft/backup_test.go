package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller"
)

// TestBackupRestoreCommands runs weft etcd member list, weft backup (with
// a passphrase), weft etcd defrag and weft restore against a controller's
// data dir, and reads the objects back from a controller started on the
// restored one.
func TestBackupRestoreCommands(t *testing.T) {
	ctl, adminConfig := secureController(t, false)
	dataDir := filepath.Dir(adminConfig)
	admin := &harness{t: t, env: map[string]string{clientconfig.EnvPath: adminConfig}}
	admin.seed()
	// A restored etcd's revisions continue far above the backup's: all
	// but the resource versions stays.
	vpcs := func(h *harness) string {
		var keep []string
		for l := range strings.Lines(h.ok("get", "vpcs", "--all-tenants", "-o", "json")) {
			if !strings.Contains(l, `"resourceVersion"`) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "")
	}
	want := vpcs(admin)

	var members []memberRow
	if err := json.Unmarshal([]byte(admin.ok("etcd", "member", "list", "--data-dir", dataDir, "-o", "json")), &members); err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || !members[0].Leader {
		t.Errorf("etcd member list = %+v, want one member, the leader", members)
	}

	dir := t.TempDir()
	pass := writeFile(t, filepath.Join(dir, "pass"), []byte("correct horse\n"))
	file := filepath.Join(dir, "weft.backup")
	if out := admin.ok("backup", "-o", file, "--data-dir", dataDir, "--passphrase-file", pass); !strings.Contains(out, "encrypted") {
		t.Errorf("weft backup printed %q", out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", fi, err)
	}
	if out := admin.ok("etcd", "defrag", "--data-dir", dataDir); !strings.Contains(out, "defragmented") {
		t.Errorf("weft etcd defrag printed %q", out)
	}
	if err := ctl.Close(); err != nil {
		t.Fatal(err)
	}

	restored := filepath.Join(dir, "restored")
	if r := admin.run("restore", file, "--data-dir", restored); r.code == 0 || !strings.Contains(r.stderr, "passphrase") {
		t.Errorf("restore without the passphrase: %+v, want an error asking for it", r)
	}
	admin.ok("restore", file, "--data-dir", restored, "--passphrase-file", pass)
	if r := admin.run("restore", file, "--data-dir", restored, "--passphrase-file", pass); r.code == 0 || !strings.Contains(r.stderr, "already holds etcd data") {
		t.Errorf("restore over etcd data: %+v, want a refusal", r)
	}
	c, err := controller.New(controller.Config{DataDir: restored, APIListen: "127.0.0.1:0", AgentListen: "off", Version: clientVersion().Version})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	after := &harness{t: t, env: map[string]string{clientconfig.EnvPath: filepath.Join(restored, "admin.config")}}
	if got := vpcs(after); got != want {
		t.Errorf("VPCs of the restored controller:\n%s\nwant:\n%s", got, want)
	}
}
