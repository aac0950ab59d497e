package test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// Simulated agents (agent --simulate) beside a real one: a job across both
// runs everywhere, each simulated host reported once with its output.
func TestSimulatedAgents(t *testing.T) {
	t.Parallel()
	const n = 300
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"real=127.0.1.250"}})
	s.StartSimulator(t, "simt", n, "10.201.0.1")
	targets := []string{"127.0.1.250"}
	for i := range n {
		targets = append(targets, agent.SimulatedIP(netip.MustParseAddr("10.201.0.1"), i).String())
	}
	start := time.Now()
	id := submit(t, s, script("echo real", targets...), nil)
	sum := waitJob(t, s, id, 60*time.Second)
	t.Logf("one job on %d simulated + 1 real agent: %s in %s", n, sum.Status, time.Since(start).Round(time.Millisecond))
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != n+1 {
		t.Fatalf("job %s %v", sum.Status, sum.Counts)
	}
	if got := readLog(t, s, id, "10.201.1.43", 0, 5).Lines; len(got) != 1 || got[0] != fmt.Sprintf("simulated %s on 10.201.1.43", schemas.ExecID(id, 0, 299, 1)) {
		t.Errorf("simulated output: %q", got)
	}
	if got := readLog(t, s, id, "127.0.1.250", 0, 5).Lines; len(got) != 1 || got[0] != "real" {
		t.Errorf("real output: %q", got)
	}
}
