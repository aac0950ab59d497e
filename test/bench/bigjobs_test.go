package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// BenchmarkBigJobsNoAgents submits ten jobs of 20,000 hosts each at once,
// none of whose agents exist, with agent_wait 5 s: every host must end
// agent_offline once the wait is over. It measures the time from the
// submissions to the last job final beside the deadline itself (the wait),
// the peak RSS of the process while they run beside its RSS before, and
// the latency of a one-host job (submit → final, on a live agent)
// submitted once a second meanwhile, beside the same job's latency on the
// idle system in the same run.
func BenchmarkBigJobsNoAgents(b *testing.B) {
	const jobs, hosts, wait = 10, 20_000, 5
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{"probe=127.0.7.1"}})
	client := &http.Client{Timeout: time.Minute}
	bodies := make([][]byte, jobs)
	for j := range bodies {
		targets := make([]string, hosts)
		for i := range targets {
			targets[i] = fmt.Sprintf("10.%d.%d.%d", 100+j, i/250, i%250+1)
		}
		bodies[j], _ = json.Marshal(map[string]any{"name": fmt.Sprintf("big-%d", j), "targets": targets,
			"agent_wait": wait, "steps": []any{map[string]any{"script": map[string]any{"content": "true"}}}})
	}
	probeBody, _ := json.Marshal(map[string]any{"name": "probe", "targets": []string{"127.0.7.1"},
		"steps": []any{map[string]any{"script": map[string]any{"content": "true"}}}})
	probe := func() (time.Duration, error) {
		t0 := time.Now()
		id, err := post(client, s, probeBody)
		if err != nil {
			return 0, err
		}
		err = finalWithin(client, s, id, time.Minute, 2*time.Millisecond)
		return time.Since(t0), err
	}
	for b.Loop() {
		var idle []time.Duration
		for range 30 {
			d, err := probe()
			if err != nil {
				b.Fatal(err)
			}
			idle = append(idle, d)
		}
		rssBefore := procStatus(b, "VmRSS")
		resetPeakRSS(b)
		start := time.Now()
		ids := make([]int64, jobs)
		var wg sync.WaitGroup
		for j := range bodies {
			wg.Go(func() {
				id, err := post(client, s, bodies[j])
				if err != nil {
					b.Error(err)
				}
				ids[j] = id
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		done, stop := make(chan struct{}), make(chan struct{})
		var during []time.Duration
		var probeErr error
		go func() {
			defer close(done)
			for tick := time.NewTicker(time.Second); ; {
				select {
				case <-stop:
					tick.Stop()
					return
				case <-tick.C:
				}
				t0 := time.Now()
				id, err := post(client, s, probeBody)
				if err == nil {
					err = finalWithin(client, s, id, 5*time.Minute, 2*time.Millisecond)
				}
				if err != nil {
					probeErr = err
					return
				}
				during = append(during, time.Since(t0))
			}
		}()
		var last time.Duration
		for _, id := range ids {
			if err := finalWithin(client, s, id, 10*time.Minute, 50*time.Millisecond); err != nil {
				b.Fatal(err)
			}
			last = time.Since(start)
		}
		peak := procStatus(b, "VmHWM")
		close(stop)
		<-done
		if probeErr != nil {
			b.Fatal(probeErr)
		}
		var sum schemas.JobSummary
		if _, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", ids[0]), &sum); err != nil {
			b.Fatal(err)
		}
		if sum.Counts["agent_offline"] != hosts {
			b.Fatalf("job %d ended %s with %v, want %d hosts agent_offline", ids[0], sum.Status, sum.Counts, hosts)
		}
		late := last - wait*time.Second
		b.ReportMetric(last.Seconds(), "s-all-final")
		b.ReportMetric(float64(peak)/(1<<20), "MiB-peak-rss")
		record(b, row{"10 jobs × 20,000 hosts, no agents, agent_wait 5 s: submit → all final", fmt.Sprintf("%.1f s", last.Seconds()),
			fmt.Sprintf("%d s (the wait: no host can end before it)", wait),
			fmt.Sprintf("%.1f s late", late.Seconds()), "<= 30 s late", metYes(late <= 30*time.Second)})
		record(b, row{"… peak RSS of the process meanwhile", bytesStr(float64(peak)),
			bytesStr(float64(rssBefore)) + " (its RSS just before)", fmt.Sprintf("%.1f×", float64(peak)/float64(rssBefore)), noGoal, noGoal})
		if len(during) == 0 {
			during = append(during, last) // not one probe finished: the storm took all of it
		}
		recordPercentiles(b, "one-host job %s, submit → final, once a second meanwhile", during, idle,
			"the same job on the idle system", 50*time.Millisecond)
	}
}

// finalWithin polls a job until it is final, from any goroutine.
func finalWithin(client *http.Client, s *testenv.System, id int64, timeout, every time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var sum schemas.JobSummary
		code, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum)
		if err == nil && code == 200 && schemas.JobFinal(sum.Status) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %d not final after %s (%d, %v, %s %v)", id, timeout, code, err, sum.Status, sum.Counts)
		}
		time.Sleep(every) // polling with a deadline: the wait is what is measured
	}
}

// procStatus reads a size field of /proc/self/status, in bytes.
func procStatus(b *testing.B, field string) uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux:
// writing 5 to clear_refs), so the peak is this benchmark's.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset (%v): it may include earlier benchmarks", err)
	}
}
