// Package test holds fleetjob's integration and end-to-end tests: real
// embedded JetStream, a real redis-server, agents running real bash, and
// worker and agent processes of the real binary.
package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// storedChunks lists the LOGS messages of one subject: sequence, line
// headers and message id, for a failure message.
func storedChunks(s *testenv.System, subject string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.JS.OrderedConsumer(ctx, schemas.StreamLogs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			return b.String() + err.Error()
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, _ := m.Metadata()
			var seq uint64
			if meta != nil {
				seq = meta.Sequence.Stream
			}
			h := m.Headers()
			fmt.Fprintf(&b, "  seq %d first %s lines %s final %q id %s\n", seq, h.Get(schemas.HdrFirstLine),
				h.Get(schemas.HdrLineCount), h.Get(schemas.HdrFinal), h.Get(nats.MsgIdHdr))
		}
		if n == 0 {
			return b.String()
		}
	}
}

func script(content string, targets ...string) map[string]any {
	return map[string]any{
		"name":    "t",
		"targets": targets,
		"steps":   []any{map[string]any{"script": map[string]any{"content": content}}},
	}
}

func submit(t *testing.T, s *testenv.System, body any, headers map[string]string) int64 {
	t.Helper()
	return s.Submit(t, body, headers)
}

func job(t *testing.T, s *testenv.System, id int64) schemas.JobSummary {
	t.Helper()
	return s.Job(t, id)
}

func waitJob(t *testing.T, s *testenv.System, id int64, timeout time.Duration) schemas.JobSummary {
	t.Helper()
	var sum schemas.JobSummary
	testenv.Eventually(t, timeout, func() bool {
		sum = job(t, s, id)
		return schemas.JobFinal(sum.Status)
	}, "job %d to finish", id)
	return sum
}

func waitStatus(t *testing.T, s *testenv.System, id int64, host string, want schemas.HostStatus, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, func() bool {
		for _, h := range hosts(t, s, id) {
			if h.Host.IP == host && h.Status == want {
				return true
			}
		}
		return false
	}, "host %s of job %d to be %s", host, id, want)
}

func hosts(t *testing.T, s *testenv.System, id int64) []native.HostView {
	t.Helper()
	var out native.ListResponse[native.HostView]
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil, &out); code != 200 {
		t.Fatalf("hosts of job %d: %d", id, code)
	}
	return out.Items
}

func hostByIP(t *testing.T, s *testenv.System, id int64, ip string) native.HostView {
	t.Helper()
	for _, h := range hosts(t, s, id) {
		if h.Host.IP == ip {
			return h
		}
	}
	t.Fatalf("job %d has no host %s", id, ip)
	return native.HostView{}
}

func readLog(t *testing.T, s *testenv.System, id int64, host string, from, limit int) native.LogResponse {
	t.Helper()
	var out native.LogResponse
	path := fmt.Sprintf("/v1/jobs/%d/hosts/%s/log?from=%d&limit=%d", id, url.PathEscape(host), from, limit)
	// 503 is the API's "try again" (a stream electing its leader after a
	// node of a cluster came back): a client retries it, so does the test
	code := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code = s.JSON(t, "GET", path, nil, nil, &out); code != 503 || time.Now().After(deadline) {
			break
		}
		t.Logf("log of %s in job %d: 503, retrying", host, id)
	}
	if code != 200 {
		t.Fatalf("log of %s in job %d: %d", host, id, code)
	}
	return out
}

// tasksSettled reports whether the TASKS stream holds no message: every
// task delivered was acked or purged (the stream is a work queue), so none
// can be delivered again and a ledger read then is final.
func tasksSettled(t *testing.T, s *testenv.System) bool {
	t.Helper()
	st, err := s.JS.Stream(t.Context(), schemas.StreamTasks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	return err == nil && info.State.Msgs == 0
}

// ledger is a file scripts append to, so a test can count what really ran.
type ledger string

func newLedger(t *testing.T) ledger { return ledger(testenv.NewLedger(t)) }

// append is the shell that records a line.
func (l ledger) append(what string) string { return testenv.Ledger(l).Append(what) }

func (l ledger) lines(t *testing.T) []string {
	t.Helper()
	return testenv.Ledger(l).Lines(t)
}

func count(lines []string) map[string]int { return testenv.Count(lines) }

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noisy is a script that writes n numbered lines, each to its output and
// then to the ledger, pausing between them; every line in the ledger must
// be in the log (a script killed between the two writes leaves a line
// only in the log, which the audit does not count).
func (l ledger) noisy(n int, pause string) string {
	return fmt.Sprintf(`for i in $(seq 1 %d); do echo "$FLEETJOB_EXEC_ID:$i"; echo "$FLEETJOB_EXEC_ID:$i" >> %s; sleep %s; done`, n, string(l), pause)
}

// fullLog reads a host's whole log once it is complete.
func fullLog(t *testing.T, s *testenv.System, id int64, host string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !readLog(t, s, id, host, 0, 1).Complete {
		if time.Now().After(deadline) {
			p := readLog(t, s, id, host, 0, 1)
			h := hostByIP(t, s, id, host)
			t.Fatalf("log of %s in job %d never complete: %+v; host %+v; the LOGS stream holds:\n%s", host, id, p, h,
				storedChunks(s, schemas.UnitLogSubject(id, h.Step, h.Phase, h.Index, h.Attempt)))
		}
		time.Sleep(50 * time.Millisecond) // polling, as testenv.Eventually, with a failure that shows the stream
	}
	var out []string
	for from := 0; ; {
		p := readLog(t, s, id, host, from, 1000)
		out = append(out, p.Lines...)
		if len(p.Lines) == 0 || p.To >= p.Total {
			return out
		}
		from = p.To
	}
}

// logRef names one host's log in a job.
type logRef struct {
	job  int64
	host string
}

// logAudit compares the logs of jobs' hosts with the ledger that noisy
// scripts wrote: lines the ledger has and no log does are lost, lines the
// logs hold more than once are duplicated.
func (l ledger) logAudit(t *testing.T, s *testenv.System, logs ...logRef) (lines, lost, dup int) {
	t.Helper()
	want := count(l.lines(t))
	got := map[string]int{}
	for _, r := range logs {
		for _, line := range fullLog(t, s, r.job, r.host) {
			if _, ok := want[line]; ok {
				got[line]++
			}
		}
	}
	for line := range want {
		switch {
		case got[line] == 0:
			lost++
			t.Logf("log audit: %q is in the ledger and in no log", line)
		case got[line] > 1:
			dup++
			t.Logf("log audit: %q is in the logs %d times", line, got[line])
		}
		lines++
	}
	return lines, lost, dup
}

// onceEach checks that each host of a one-step job ran its script once (by
// the ledger of runs) and was announced finished once (host.finished), and
// returns how many did both.
func onceEach(t *testing.T, s *testenv.System, id int64, hosts int, runs ledger) int {
	t.Helper()
	ran := count(runs.lines(t))
	evs := hostFinishedEvents(t, s, id)
	once := 0
	for i := range hosts {
		exec := schemas.ExecID(id, 0, i, 1)
		if ran[exec] == 1 && evs[exec] == 1 {
			once++
		} else {
			t.Errorf("%s ran %d times and was announced %d times", exec, ran[exec], evs[exec])
		}
	}
	if len(ran) != hosts || len(evs) != hosts {
		t.Errorf("runs %v, announcements %v: want %d of each", ran, evs, hosts)
	}
	return once
}

// hostLogs names the log of each of a job's hosts.
func hostLogs(id int64, ips []string) []logRef {
	var logs []logRef
	for _, ip := range ips {
		logs = append(logs, logRef{id, ip})
	}
	return logs
}

// storedBySubject counts the messages a stream holds on each subject that
// filter matches.
func storedBySubject(t *testing.T, s *testenv.System, stream, filter string) map[string]uint64 {
	t.Helper()
	st, err := s.JS.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

// deadLetters lists the keys of the dead letters recorded.
func deadLetters(t *testing.T, s *testenv.System) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	kv, err := s.JS.KeyValue(ctx, schemas.BucketDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	return out
}
