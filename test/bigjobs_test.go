package test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// Ten 2,000-host jobs at once on 2,000 simulated agents: every job ends
// success with every host recorded once (a success count of 2,000 and
// exactly 2,000 host.finished events, no more, no fewer). Not timed: what
// it checks is that big concurrent commits neither lose nor repeat hosts.
func TestTenBigJobsOnSimulatedAgents(t *testing.T) {
	t.Parallel()
	const jobs, hosts = 10, 2000
	s := testenv.Start(t, testenv.Options{Workers: 2})
	s.StartSimulator(t, "bigj", hosts, "10.202.0.1")
	targets := make([]string, hosts)
	for i := range targets {
		targets[i] = agent.SimulatedIP(netip.MustParseAddr("10.202.0.1"), i).String()
	}
	ids := make([]int64, jobs)
	var wg sync.WaitGroup
	for j := range ids {
		wg.Go(func() {
			body := script("true", targets...)
			body["name"] = fmt.Sprintf("big-%d", j)
			ids[j] = submit(t, s, body, nil)
		})
	}
	wg.Wait()
	for _, id := range ids {
		sum := waitJob(t, s, id, 3*time.Minute)
		if sum.Status != schemas.JobSuccess || sum.Counts["success"] != hosts || sum.TotalHosts != hosts {
			t.Errorf("job %d: %s %v of %d hosts", id, sum.Status, sum.Counts, sum.TotalHosts)
		}
		if n := hostEventsOnce(t, s, id, hosts); n != hosts {
			t.Errorf("job %d: %d host.finished events, want %d (each host once)", id, n, hosts)
		}
	}
}

// hostEventsOnce waits (up to a minute: a job's events follow its cached
// state) until a job has want host.finished events and returns how many
// it has then; more than want is a host announced twice.
func hostEventsOnce(t *testing.T, s *testenv.System, id int64, want int) int {
	t.Helper()
	n := 0
	testenv.Eventually(t, time.Minute, func() bool {
		n = len(jobEvents(t, s, id, events.HostFinished))
		return n >= want
	}, "job %d: %d host.finished events", id, want)
	return n
}
