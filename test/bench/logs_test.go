package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// The log benchmarks' script prints logLines lines of 59 characters and a
// newline (60 bytes): a zero-padded 10-digit number and a fixed suffix. It
// cats a file written beforehand, so that the producer is not what limits
// the figure (`seq` making the same lines runs at ~3M lines/s here, a third
// of what JetStream stores).
const (
	logLines  = 1_000_000
	logSuffix = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV"
	logIP     = "127.0.8.1"
)

// logLine is line i (0-based) of the script's output.
func logLine(i int) string { return fmt.Sprintf("%010d %s", i+1, logSuffix) }

// logScript writes the output to a file and returns the script that prints it.
func logScript(b *testing.B) string {
	b.Helper()
	var buf bytes.Buffer
	for i := range logLines {
		buf.WriteString(logLine(i))
		buf.WriteByte('\n')
	}
	f := filepath.Join(b.TempDir(), "output.txt")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	return "exec cat '" + f + "'"
}

type logPage struct {
	From     int      `json:"from"`
	To       int      `json:"to"`
	Total    int      `json:"total"`
	Complete bool     `json:"complete"`
	Lines    []string `json:"lines"`
}

func logPath(id int64, from, limit int) string {
	return fmt.Sprintf("/v1/jobs/%d/hosts/%s/log?from=%d&limit=%d", id, logIP, from, limit)
}

// runLogJob submits the 1,000,000-line script to the one agent and polls
// GET …/log for the last line until it is readable and the log complete;
// it returns the job id and the time from the POST to that read.
func runLogJob(b *testing.B, s *testenv.System, client *http.Client, script string) (int64, time.Duration) {
	b.Helper()
	body, _ := json.Marshal(map[string]any{
		"name": "bench-log", "targets": []string{logIP},
		"steps": []any{map[string]any{"script": map[string]any{"content": script}}},
	})
	start := time.Now()
	id, err := post(client, s, body)
	if err != nil {
		b.Fatal(err)
	}
	deadline := start.Add(5 * time.Minute)
	for {
		var p logPage
		code, err := getJSON(client, s, logPath(id, logLines-1, 1), &p)
		if err != nil {
			b.Fatal(err)
		}
		if code == 200 && p.Complete && len(p.Lines) == 1 {
			el := time.Since(start)
			if p.Total != logLines || p.Lines[0] != logLine(logLines-1) {
				b.Fatalf("log of job %d: total %d, last line %q", id, p.Total, p.Lines[0])
			}
			return id, el
		}
		if code == 200 && p.Complete {
			b.Fatalf("log of job %d complete with %d lines", id, p.Total)
		}
		if time.Now().After(deadline) {
			b.Fatalf("log of job %d: last line not readable after 5 minutes (%d, %+v)", id, code, p)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline, fine-grained: the wait is what is measured
	}
}

// logChunk is one LOGS message of a log: its first line, line count and
// stream sequence.
type logChunk struct {
	first, count int
	seq          uint64
}

// logChunks reads the headers of every chunk of a log from the stream.
func logChunks(b *testing.B, s *testenv.System, subject string) []logChunk {
	b.Helper()
	ctx := context.Background()
	st, err := s.JS.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, HeadersOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	var out []logChunk
	for {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		meta, _ := m.Metadata()
		f, _ := strconv.Atoi(m.Headers().Get(schemas.HdrFirstLine))
		c, _ := strconv.Atoi(m.Headers().Get(schemas.HdrLineCount))
		out = append(out, logChunk{f, c, meta.Sequence.Stream})
		if meta.NumPending == 0 {
			return out
		}
	}
}

// rawLogPublish publishes the script's output cut exactly as the agent
// cut it (the chunks of its log, as read back from the stream: the same
// lines joined by newlines, the same number of messages) with
// PublishMsgAsync to a fresh stream with the LOGS stream's settings, and
// waits for every ack. It returns the time taken and the bytes sent.
func rawLogPublish(b *testing.B, s *testenv.System, cut []logChunk) (time.Duration, int) {
	b.Helper()
	ctx := context.Background()
	for _, sc := range s.P.Top.Streams() {
		if sc.Name == schemas.StreamLogs {
			sc.Name, sc.Subjects, sc.Description = "BENCHRAWLOGS", []string{"bench.rawlog.>"}, "raw log baseline"
			if _, err := s.JS.CreateStream(ctx, sc); err != nil {
				b.Fatal(err)
			}
		}
	}
	defer s.JS.DeleteStream(ctx, "BENCHRAWLOGS")
	chunks := make([][]byte, len(cut))
	for i, c := range cut {
		lines := make([]string, c.count)
		for j := range lines {
			lines[j] = logLine(c.first + j)
		}
		chunks[i] = []byte(strings.Join(lines, "\n"))
	}
	size := 0
	start := time.Now()
	futs := make([]jetstream.PubAckFuture, 0, len(chunks))
	for _, c := range chunks {
		f, err := s.JS.PublishMsgAsync(&nats.Msg{Subject: "bench.rawlog.1", Data: c})
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
		size += len(c)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-time.After(time.Minute):
			b.Fatal("raw log publish: no ack within a minute")
		}
	}
	return time.Since(start), size
}

// scriptAlone is how long the script takes on its own, writing to a pipe
// that a Go program drains (what the agent's output reader cannot beat).
func scriptAlone(b *testing.B, script string) time.Duration {
	b.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Stdout = io.Discard
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkLogThroughput measures log lines per second from one agent to a
// readable log: a script prints 1,000,000 60-byte lines (cat), and the
// time runs from the POST until GET /v1/jobs/{id}/hosts/{ip}/log returns
// the last line of a complete log. Beside it: raw JetStream async publish
// of the same lines cut into the same chunks as the agent cut them (read
// back from the stream, so it follows the agent's chunking) to a stream
// with the LOGS settings, waiting for every ack, in the same run; and the
// script on its own.
func BenchmarkLogThroughput(b *testing.B) {
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{"log=" + logIP}})
	client := &http.Client{}
	script := logScript(b)
	for b.Loop() {
		alone := scriptAlone(b, script)
		id, el := runLogJob(b, s, client, script)
		chunks := logChunks(b, s, schemas.UnitLogSubject(id, 0, "", 0, 1))
		raw, size := rawLogPublish(b, s, chunks)
		ours, floor := logLines/el.Seconds(), logLines/raw.Seconds()
		b.ReportMetric(ours, "lines/s")
		b.ReportMetric(floor, "raw-js-lines/s")
		b.ReportMetric(ours/floor, "ratio")
		b.ReportMetric(float64(size)/el.Seconds()/(1<<20), "MB/s")
		b.ReportMetric(float64(len(chunks)), "chunks")
		b.ReportMetric(logLines/alone.Seconds(), "script-alone-lines/s")
		record(b, row{"log throughput, 1M 60-byte lines from one agent to readable", rate(ours, "lines/s"),
			rate(floor, "lines/s") + " (raw JetStream async publish, the same bytes in the agent's " + thousands(int64(len(chunks))) + " chunks)",
			fmt.Sprintf("%.2f", ours/floor), ">= 0.5", metYes(ours/floor >= 0.5)})
		record(b, row{"log throughput, the same, beside its producer", rate(ours, "lines/s"),
			rate(logLines/alone.Seconds(), "lines/s") + " (the script alone, into a pipe a Go program drains)",
			fmt.Sprintf("%.2f", ours*alone.Seconds()/logLines), noGoal, noGoal})
	}
}

// BenchmarkLogRead1M measures reading 100 lines at a random offset of a
// 1,000,000-line log through GET /v1/jobs/{id}/hosts/{ip}/log, 500 reads
// one at a time, p50 and p99. Beside it: the same 500 ranges read straight
// from the stream (direct get of the one or two chunks that hold them, by
// sequence, and splitting out the lines), in the same run.
func BenchmarkLogRead1M(b *testing.B) {
	const reads, limit, warm = 500, 100, 20
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{"log=" + logIP}})
	client := &http.Client{}
	id, _ := runLogJob(b, s, client, logScript(b))
	chunks := logChunks(b, s, schemas.UnitLogSubject(id, 0, "", 0, 1))
	st, err := s.JS.Stream(context.Background(), schemas.StreamLogs)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := make([]int, warm+reads)
	for i := range offsets {
		offsets[i] = rng.IntN(logLines - limit + 1)
	}
	for b.Loop() {
		// straight from the stream
		raw := make([]time.Duration, 0, reads)
		for i, from := range offsets {
			t0 := time.Now()
			k := sort.Search(len(chunks), func(k int) bool { return chunks[k].first+chunks[k].count > from })
			var got []string
			for ; k < len(chunks) && chunks[k].first < from+limit; k++ {
				m, err := st.GetMsg(context.Background(), chunks[k].seq)
				if err != nil {
					b.Fatal(err)
				}
				for j, l := range strings.Split(string(m.Data), "\n") {
					if n := chunks[k].first + j; n >= from && n < from+limit {
						got = append(got, l)
					}
				}
			}
			if i >= warm {
				raw = append(raw, time.Since(t0))
			}
			if len(got) != limit || got[0] != logLine(from) {
				b.Fatalf("raw read at %d: %d lines", from, len(got))
			}
		}
		// through the API
		lat := make([]time.Duration, 0, reads)
		for i, from := range offsets {
			var p logPage
			t0 := time.Now()
			code, err := getJSON(client, s, logPath(id, from, limit), &p)
			d := time.Since(t0)
			if err != nil || code != 200 {
				b.Fatalf("read at %d: %d %v", from, code, err)
			}
			if len(p.Lines) != limit || p.Lines[0] != logLine(from) || p.Lines[limit-1] != logLine(from+limit-1) {
				b.Fatalf("read at %d: %d lines from %q", from, len(p.Lines), p.Lines[0])
			}
			if i >= warm {
				lat = append(lat, d)
			}
		}
		recordPercentiles(b, "log read %s, 100 lines at a random offset of 1M", lat, raw,
			"direct get of the chunks by sequence, no HTTP", 5*time.Millisecond)
	}
}
