package schemas

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSummarizeCountsHosts(t *testing.T) {
	a, b, c := Host{IP: "10.0.0.1"}, Host{IP: "10.0.0.2"}, Host{IP: "10.0.0.3"}
	type step struct {
		targets []Host
		status  string
		hosts   []HostStatus
	}
	for _, tc := range []struct {
		name       string
		job        string
		at         int
		steps      []step
		wantTotal  int
		wantCounts map[string]int
		wantSteps  []map[string]int // each step's own counts
	}{
		{"three steps on two hosts, all done", JobSuccess, 2, []step{
			{[]Host{a, b}, JobSuccess, []HostStatus{HostSuccess, HostSuccess}},
			{[]Host{a, b}, JobSuccess, []HostStatus{HostSuccess, HostSuccess}},
			{[]Host{a, b}, JobSuccess, []HostStatus{HostSuccess, HostSuccess}},
		}, 2, map[string]int{"success": 2}, []map[string]int{{"success": 2}, {"success": 2}, {"success": 2}}},
		{"the current step decides", JobRunning, 1, []step{
			{[]Host{a, b}, JobSuccess, []HostStatus{HostSuccess, HostSuccess}},
			{[]Host{a, b}, JobRunning, []HostStatus{HostRunning, HostPending}},
			{[]Host{a, b}, JobWaiting, []HostStatus{HostPending, HostPending}},
		}, 2, map[string]int{"running": 1, "pending": 1}, []map[string]int{{"success": 2}, {"running": 1, "pending": 1}, {"pending": 2}}},
		{"a host the current step does not target keeps its latest status", JobRunning, 1, []step{
			{[]Host{a, b}, JobSuccess, []HostStatus{HostSuccess, HostSuccess}},
			{[]Host{b, c}, JobRunning, []HostStatus{HostRunning, HostPending}},
			{[]Host{a}, JobWaiting, []HostStatus{HostPending}},
		}, 3, map[string]int{"success": 1, "running": 1, "pending": 1}, []map[string]int{{"success": 2}, {"running": 1, "pending": 1}, {"pending": 1}}},
		{"a host only an unreached step targets counts as skipped", JobFailed, 0, []step{
			{[]Host{a, b}, JobPartial, []HostStatus{HostSuccess, HostFailed}},
			{[]Host{b, c}, StepSkipped, []HostStatus{HostSkipped, HostSkipped}},
		}, 3, map[string]int{"success": 1, "failed": 1, "skipped": 1}, []map[string]int{{"success": 1, "failed": 1}, {"skipped": 2}}},
		{"no steps", JobFailed, 0, nil, 0, map[string]int{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &JobSpec{}
			st := &JobState{ID: 7, Status: tc.job, Step: tc.at}
			for _, s := range tc.steps {
				spec.Steps = append(spec.Steps, Step{Targets: s.targets})
				ss := StepState{Status: s.status, Hosts: NewHostTable(len(s.hosts))}
				for i, h := range s.hosts {
					ss.Hosts.Set(i, h, 0)
				}
				st.Steps = append(st.Steps, ss)
			}
			sum := Summarize(spec, st)
			if sum.TotalHosts != tc.wantTotal {
				t.Errorf("total_hosts: got %d, want %d", sum.TotalHosts, tc.wantTotal)
			}
			if diff := cmp.Diff(sum.Counts, tc.wantCounts); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
			var steps []map[string]int
			for i, s := range sum.Steps {
				steps = append(steps, s.Counts)
				if s.Hosts != len(tc.steps[i].targets) {
					t.Errorf("step %d hosts: got %d, want %d", i, s.Hosts, len(tc.steps[i].targets))
				}
			}
			if diff := cmp.Diff(steps, tc.wantSteps); diff != "" {
				t.Errorf("step counts (-got +want):\n%s", diff)
			}
		})
	}
}
