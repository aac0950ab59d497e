package test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
	"github.com/fleetjob/fleetjob/workers/logindex"
)

// logsMessages counts the LOGS messages of a job, every host and step.
func logsMessages(t *testing.T, s *testenv.System, id int64) int {
	t.Helper()
	n := 0
	for _, c := range storedBySubject(t, s, schemas.StreamLogs, fmt.Sprintf("fleetjob.log.job.*.*.%d.>", id)) {
		n += int(c)
	}
	return n
}

// wholeLog reads a host's log of a step and attempt through the native API,
// in pages of limit lines, and says whether it was complete.
func wholeLog(t *testing.T, s *testenv.System, id int64, host string, step, attempt, limit int) ([]string, bool) {
	t.Helper()
	lines := []string{}
	for from := 0; ; {
		var p struct {
			schemas.LogPage
			Attempt int `json:"attempt"`
		}
		path := fmt.Sprintf("/v1/jobs/%d/hosts/%s/log?step=%d&from=%d&limit=%d", id, host, step, from, limit)
		if attempt > 0 {
			path += fmt.Sprintf("&attempt=%d", attempt)
		}
		if code := s.JSON(t, "GET", path, nil, nil, &p); code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		if p.From != from || p.To != from+len(p.Lines) || len(p.Lines) > limit {
			t.Errorf("%s: page %+v", path, p.LogPage)
		}
		lines = append(lines, p.Lines...)
		if p.To >= p.Total {
			return lines, p.Complete
		}
		from = p.To
	}
}

// retryFailed retries job id's failed hosts and waits for host's second
// attempt and the job to succeed.
func retryFailed(t *testing.T, s *testenv.System, id int64, host string) {
	t.Helper()
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/0/retry-failed", id), nil, nil); code != 202 {
		t.Fatalf("retry-failed: %d %s", code, b)
	}
	// the operation is a command: the job is failed until a worker takes it
	testenv.Eventually(t, 20*time.Second, func() bool {
		h := hostByIP(t, s, id, host)
		return h.Attempt == 2 && h.Status.Final()
	}, "the retry to end")
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("after the retry: %s", sum.Status)
	}
}

// A short log rides in its result: no LOGS message, the same lines read
// back, page by page (the BlueKing and octans log reads go through the
// same reader: their contract tests read small jobs' logs); and neither
// host rows nor events carry it. A small job keeps it in its state, a
// larger one (a smaller bound) in its result segments, each attempt's. A
// larger output, or a file step's, still streams to LOGS.
func TestInlineLogs(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"i1=127.0.0.71"}})
	const host = "127.0.0.71"
	// leading and trailing blanks, an empty line, stderr, no final newline
	output := []string{"  one", "", "two\t", "to stderr", "no newline"}
	small := `echo "  one"; echo; printf 'two\t\n'; echo "to stderr" >&2; printf 'no newline'`

	t.Run("small job inline", func(t *testing.T) {
		id := submit(t, s, script(small, host), nil)
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s", sum.Status)
		}
		for _, limit := range []int{100, 2, 1} {
			got, complete := wholeLog(t, s, id, host, 0, 0, limit)
			if strings.Join(got, "|") != strings.Join(output, "|") || !complete {
				t.Errorf("log in pages of %d: got %q complete %v, want %q complete", limit, got, complete, output)
			}
		}
		if n := logsMessages(t, s, id); n != 0 {
			t.Errorf("LOGS holds %d messages of the job, want none", n)
		}
		if h := hostByIP(t, s, id, host); h.Lines != len(output) {
			t.Errorf("host lines: got %d, want %d", h.Lines, len(output))
		}
		// the log is not in host rows (API, Redis) nor in events
		if code, b := s.Do(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil); code != 200 || strings.Contains(string(b), `"log"`) {
			t.Errorf("host list: %d %s", code, b)
		}
		rows, err := s.RDB.HGetAll(t.Context(), fmt.Sprintf("{fj}:hosts:%d", id)).Result()
		if err != nil || len(rows) == 0 {
			t.Fatalf("cached host rows: %v %v", rows, err)
		}
		for k, v := range rows {
			if strings.Contains(v, `"log"`) {
				t.Errorf("cached host row %s: %s", k, v)
			}
		}
		for _, ev := range jobEvents(t, s, id, "*") {
			if strings.Contains(string(ev.Data), `"log"`) {
				t.Errorf("event %s carries the log: %s", ev.Type, ev.Data)
			}
		}
	})

	t.Run("output past the cap in LOGS", func(t *testing.T) {
		var want []string
		for i := 1; i <= 150; i++ {
			want = append(want, fmt.Sprintf("line %03d", i)) // 150 × 9 bytes > MaxInlineLog
		}
		id := submit(t, s, script(`for i in $(seq 1 150); do printf 'line %03d\n' $i; done`, host), nil)
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s", sum.Status)
		}
		got, complete := wholeLog(t, s, id, host, 0, 0, 40)
		if strings.Join(got, "|") != strings.Join(want, "|") || !complete {
			t.Errorf("log: got %d lines %q… complete %v, want %d", len(got), got[:min(3, len(got))], complete, len(want))
		}
		if n := logsMessages(t, s, id); n == 0 {
			t.Error("LOGS holds no message of the job")
		}
		// a chunked log's index is a cache that expires (reads rebuild it)
		key := fmt.Sprintf("{fjlog:%d}:0.0.1", id)
		if ttl, err := s.RDB.TTL(t.Context(), key).Result(); err != nil || ttl <= 0 || ttl > logindex.IndexTTL {
			t.Errorf("TTL of the log index %s: %v %v, want (0, %v]", key, ttl, err, logindex.IndexTTL)
		}
	})

	t.Run("a job with a file step: its script step's in a segment", func(t *testing.T) {
		src, dst := t.TempDir(), t.TempDir()
		writeFile(t, src+"/f.txt")
		body := map[string]any{"targets": []string{host}, "steps": []any{
			map[string]any{"script": map[string]any{"content": small}},
			map[string]any{"file": map[string]any{
				"sources": []any{map[string]any{"hosts": []string{host}, "paths": []string{src + "/f.txt"}}}, "destination": dst}},
		}}
		id := submit(t, s, body, nil)
		if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s %+v", sum.Status, sum.Steps)
		}
		got, complete := wholeLog(t, s, id, host, 0, 0, 100)
		if strings.Join(got, "|") != strings.Join(output, "|") || !complete {
			t.Errorf("script step's log: got %q complete %v, want %q", got, complete, output)
		}
		// not in LOGS: the job keeps its results in segments (it has a
		// file step), and a short log rides in the script step's (the
		// file step's transfers log to LOGS)
		st, err := s.JS.Stream(t.Context(), schemas.StreamLogs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetLastMsgForSubject(t.Context(), schemas.UnitLogSubject(id, 0, "", 0, 1)); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("the script step's chunk in LOGS: %v, want none", err)
		}
		if n := logsMessages(t, s, id); n == 0 {
			t.Error("LOGS holds no message of the file step")
		}
	})

	t.Run("each attempt's own log", func(t *testing.T) {
		marker := t.TempDir() + "/tried"
		id := submit(t, s, script(fmt.Sprintf(`if [ -e %[1]s ]; then echo second; else touch %[1]s; echo first; exit 1; fi`, marker), host), nil)
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobFailed {
			t.Fatalf("job: %s, want failed", sum.Status)
		}
		retryFailed(t, s, id, host)
		for attempt, want := range map[int]string{0: "second", 1: "first", 2: "second"} {
			if got, complete := wholeLog(t, s, id, host, 0, attempt, 10); strings.Join(got, "|") != want || !complete {
				t.Errorf("attempt %d: got %q complete %v, want [%s]", attempt, got, complete, want)
			}
		}
		if n := logsMessages(t, s, id); n != 0 {
			t.Errorf("LOGS holds %d messages of the job, want none", n)
		}
	})

	t.Run("a larger job's in its segments", func(t *testing.T) {
		// the real agent and 16 simulated ones: 17 targets, past
		// schemas.MaxInlineResults
		first := netip.MustParseAddr("10.203.0.1")
		s.StartSimulator(t, "siml", schemas.MaxInlineResults, first.String())
		targets := []string{host}
		for i := range schemas.MaxInlineResults {
			targets = append(targets, agent.SimulatedIP(first, i).String())
		}
		marker := t.TempDir() + "/tried"
		id := submit(t, s, script(fmt.Sprintf(`if [ -e %[1]s ]; then echo second; else touch %[1]s; echo first; echo; exit 1; fi`, marker), targets...), nil)
		if sum := waitJob(t, s, id, 30*time.Second); sum.Status == schemas.JobSuccess {
			t.Fatalf("job: %s, want the real host failed", sum.Status)
		}
		retryFailed(t, s, id, host)
		for attempt, want := range map[int]string{0: "second", 1: "first|", 2: "second"} {
			if got, complete := wholeLog(t, s, id, host, 0, attempt, 1); strings.Join(got, "|") != want || !complete {
				t.Errorf("attempt %d: got %q complete %v, want [%s]", attempt, got, complete, want)
			}
		}
		for _, i := range []int{1, schemas.MaxInlineResults} {
			ip := targets[i]
			want := fmt.Sprintf("simulated %s on %s", schemas.ExecID(id, 0, i, 1), ip)
			if got, complete := wholeLog(t, s, id, ip, 0, 0, 10); len(got) != 1 || got[0] != want || !complete {
				t.Errorf("simulated host %s: got %q complete %v, want [%s]", ip, got, complete, want)
			}
		}
		if n := logsMessages(t, s, id); n != 0 {
			t.Errorf("LOGS holds %d messages of the job, want none", n)
		}
		if code, b := s.Do(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil); code != 200 || strings.Contains(string(b), `"log"`) {
			t.Errorf("host list: %d %s", code, b)
		}

		// past the larger job's bound (schemas.MaxSegmentInlineLog),
		// though within a small job's: LOGS
		long := strings.Repeat("y", schemas.MaxSegmentInlineLog+1)
		id = submit(t, s, script("echo "+long, targets...), nil)
		if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s", sum.Status)
		}
		if got, complete := wholeLog(t, s, id, host, 0, 0, 10); len(got) != 1 || got[0] != long || !complete {
			t.Errorf("long line: got %q complete %v", got, complete)
		}
		if n := logsMessages(t, s, id); n != 1 {
			t.Errorf("LOGS holds %d messages of the job, want the real host's one", n)
		}
	})

	t.Run("simulated agents", func(t *testing.T) {
		s.StartSimulator(t, "simi", 1, "10.202.0.1")
		ip := agent.SimulatedIP(netip.MustParseAddr("10.202.0.1"), 0).String()
		id := submit(t, s, script("true", ip), nil)
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s", sum.Status)
		}
		want := fmt.Sprintf("simulated %s on %s", schemas.ExecID(id, 0, 0, 1), ip)
		if got, complete := wholeLog(t, s, id, ip, 0, 0, 10); len(got) != 1 || got[0] != want || !complete {
			t.Errorf("simulated log: got %q complete %v, want [%s]", got, complete, want)
		}
		if n := logsMessages(t, s, id); n != 0 {
			t.Errorf("LOGS holds %d messages of the job, want none", n)
		}
	})
}
