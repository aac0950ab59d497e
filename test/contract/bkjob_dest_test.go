package contract

import (
	"testing"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// TestBKProtectedDestination: fast_transfer_file into a system directory
// or over a critical file is refused as bk-job refuses a dangerous script
// (HTTP 200, result false, 1244019), before anything is queued.
func TestBKProtectedDestination(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	transfer := func(dest string) map[string]any {
		return map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "file_target_path": dest, "account_alias": "root",
			"file_source_list": []any{map[string]any{"file_list": []string{"/srv/app/sshd_config"}, "account": map[string]any{"alias": "root"},
				"server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.91"}}}}},
			"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.92"}}}}
	}
	before := s.CommandCount(t)
	for _, dest := range []string{"/etc", "/etc/", " /usr/sbin/ ", "/boot", "/etc/ssh/", "/proc/", "/dev", "/root/.ssh/"} {
		bkFail(t, s, "POST", "/api/v3/fast_transfer_file", transfer(dest), 200, 1244019, "")
	}
	if after := s.CommandCount(t); after != before {
		t.Errorf("%d commands queued by refused transfers", after-before)
	}
	// an application's directory passes (its hosts have no agent)
	data := bkData(t, s, "POST", "/api/v3/fast_transfer_file", transfer("/etc/fleetjob-test-app/"))
	if num(data["job_instance_id"]) <= 0 {
		t.Errorf("allowed transfer: %v", data)
	}
}
