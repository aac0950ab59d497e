package logindex

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
	"github.com/fleetjob/fleetjob/schemas"
)

// These tests need only NATS: Redis is exercised through the integration
// suite; here the index is a real redis-server when REDIS_TEST_ADDR points
// at one, and otherwise an address that refuses, which must still answer
// from the stream.

func publishLog(t *testing.T, js jetstream.JetStream, ref schemas.LogRef, chunks []int) int {
	t.Helper()
	line := 0
	ref.Pool, ref.Agent = schemas.DefaultPool, "a1" // its writer; readers read with none
	for i, n := range chunks {
		m := nats.NewMsg(ref.Subject())
		var lines []string
		for k := 0; k < n; k++ {
			lines = append(lines, fmt.Sprintf("l%d", line+k))
		}
		m.Data = []byte(strings.Join(lines, "\n"))
		m.Header.Set(schemas.HdrFirstLine, strconv.Itoa(line))
		m.Header.Set(schemas.HdrLineCount, strconv.Itoa(n))
		if i == len(chunks)-1 {
			m.Header.Set(schemas.HdrFinal, "1")
		}
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		line += n
	}
	return line
}

func TestReadWithoutRedis(t *testing.T) {
	js, _ := jetstream.New(natstest.Conn(t))
	ctx := context.Background()
	if err := schemas.DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// a Redis that is not there: every index read fails, reads still work
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	r, err := NewReader(ctx, js, rdb, slogDiscard())
	if err != nil {
		t.Fatal(err)
	}
	ref := schemas.LogRef{Job: 9, Step: 0, Host: 2, Attempt: 1}
	total := publishLog(t, js, ref, []int{3, 0, 5, 1, 4})
	for _, c := range []struct{ from, limit int }{{0, 2}, {2, 5}, {8, 10}, {12, 1}, {13, 5}} {
		p, err := r.Read(ctx, ref, c.from, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{}
		for i := c.from; i < min(c.from+c.limit, total); i++ {
			want = append(want, fmt.Sprintf("l%d", i))
		}
		if strings.Join(p.Lines, ",") != strings.Join(want, ",") || p.Total != total || !p.Complete || p.To != c.from+len(want) {
			t.Errorf("read %d+%d: got %+v, want %v", c.from, c.limit, p, want)
		}
	}
	// an agent that resent its tail after a failed publish: chunks overlap,
	// each line is read once
	resent := schemas.LogRef{Job: 11, Step: 0, Host: 0, Attempt: 1}
	for _, c := range [][3]int{{0, 3, 0}, {3, 4, 0}, {7, 2, 1}, {3, 4, 0}, {7, 2, 1}} {
		m := nats.NewMsg(resent.Subject())
		var lines []string
		for k := range c[1] {
			lines = append(lines, fmt.Sprintf("l%d", c[0]+k))
		}
		m.Data = []byte(strings.Join(lines, "\n"))
		m.Header.Set(schemas.HdrFirstLine, strconv.Itoa(c[0]))
		m.Header.Set(schemas.HdrLineCount, strconv.Itoa(c[1]))
		if c[2] == 1 {
			m.Header.Set(schemas.HdrFinal, "1")
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	p, err := r.Read(ctx, resent, 1, 100)
	if err != nil || strings.Join(p.Lines, ",") != "l1,l2,l3,l4,l5,l6,l7,l8" || p.Total != 9 || !p.Complete {
		t.Errorf("overlapping chunks: %+v %v", p, err)
	}
	empty, err := r.Read(ctx, schemas.LogRef{Job: 10, Attempt: 1}, 0, 10)
	if err != nil || empty.Total != 0 || empty.Complete || len(empty.Lines) != 0 {
		t.Errorf("missing log: %+v %v", empty, err)
	}
}

func TestLookupNeedsContiguousChunks(t *testing.T) {
	for _, c := range []struct {
		name   string
		chunks []chunk
		from   int
		end    int
		ok     bool
	}{
		{"covered", []chunk{{0, 5, 1}, {5, 5, 2}}, 2, 8, true},
		{"gap", []chunk{{0, 5, 1}, {6, 5, 2}}, 2, 8, false},
		{"starts late", []chunk{{3, 5, 1}}, 2, 4, false},
		{"short", []chunk{{0, 5, 1}}, 2, 8, false},
		{"overlap (a resend)", []chunk{{0, 5, 1}, {3, 5, 2}, {3, 5, 3}}, 2, 8, true},
	} {
		got := contiguous(c.chunks, c.from, c.end)
		if got != c.ok {
			t.Errorf("%s: got %v, want %v", c.name, got, c.ok)
		}
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRefOf(t *testing.T) {
	for subj, want := range map[string]schemas.LogRef{
		"fleetjob.log.job.a.web-1.7.1.3.2":    {Job: 7, Step: 1, Host: 3, Attempt: 2, Pool: "a", Agent: "web-1"},
		"fleetjob.log.job.sim.sim-2.7.1.u3.1": {Job: 7, Step: 1, Phase: schemas.PhaseUpload, Host: 3, Attempt: 1, Pool: "sim", Agent: "sim-2"},
	} {
		got, ok := schemas.LogRefOf(subj)
		if !ok || got != want || got.Subject() != subj {
			t.Errorf("schemas.LogRefOf(%q) = %+v %v", subj, got, ok)
		}
	}
	for _, bad := range []string{"fleetjob.log.job.a.w.7.1.x.1", "fleetjob.log.agent.a", "fleetjob.log.job.a.w.7.1.3", "fleetjob.log.job.7.1.3.2", "fleetjob.log.job.a.*.7.1.3.2"} {
		if _, ok := schemas.LogRefOf(bad); ok {
			t.Errorf("schemas.LogRefOf(%q) accepted", bad)
		}
	}
}

// A log that rode in its result (schemas.Report.Log) is not in LOGS: the
// reader serves it from the job's state, or for an attempt a retry
// superseded from the key it was kept under, paged as one final chunk.
func TestReadInline(t *testing.T) {
	js, _ := jetstream.New(natstest.Conn(t))
	ctx := t.Context()
	if err := schemas.DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	r, err := NewReader(ctx, js, rdb, slogDiscard())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v any) {
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	log := func(s string) *string { return &s }
	put(schemas.KeyJobState(5), schemas.JobState{V: 1, ID: 5, Results: []schemas.HostResult{
		{Step: 0, Index: 0, Attempt: 1, Status: schemas.HostSuccess, Lines: 3, Log: log("a\n\nc")},
		{Step: 0, Index: 1, Attempt: 1, Status: schemas.HostSuccess, Lines: 0, Log: log("")},
		{Step: 0, Index: 2, Attempt: 1, Status: schemas.HostSuccess, Lines: 1, Log: log("")},
		{Step: 0, Index: 3, Attempt: 1, Status: schemas.HostRunning},
		{Step: 0, Index: 4, Attempt: 2, Status: schemas.HostRunning},          // retried: attempt 1 kept apart
		{Step: 1, Index: 0, Attempt: 1, Status: schemas.HostFailed, Lines: 2}, // its log is in LOGS (lost here)
	}})
	put(schemas.KeyEarlierResult(5, 0, "", 4, 1), schemas.HostResult{Step: 0, Index: 4, Attempt: 1, Status: schemas.HostFailed, Lines: 1, Log: log("boom")})
	// a larger job: its results (and a retried unit's earlier one) in
	// segments of schemas.ResultSegment units, none in its state
	put(schemas.KeyJobState(8), schemas.JobState{V: 1, ID: 8})
	put(schemas.KeyResultSegment(8, 0, "", 1), schemas.ResultSegmentValue{
		Results: []schemas.HostResult{
			{Index: schemas.ResultSegment, Attempt: 2, Status: schemas.HostSuccess, Lines: 1, Log: log("second")},
			{Index: schemas.ResultSegment + 1, Attempt: 1, Status: schemas.HostSuccess, Lines: 2}, // in LOGS
		},
		Earlier: []schemas.HostResult{{Index: schemas.ResultSegment, Attempt: 1, Status: schemas.HostFailed, Lines: 2, Log: log("first\nboom")}},
	})
	// a segment answers without the state: job 9 has none to read
	put(schemas.KeyResultSegment(9, 0, "", 0), schemas.ResultSegmentValue{
		Results: []schemas.HostResult{{Index: 3, Attempt: 1, Status: schemas.HostSuccess, Lines: 1, Log: log("no state read")}},
	})
	seg := func(host, attempt int) schemas.LogRef {
		return schemas.LogRef{Job: 8, Host: schemas.ResultSegment + host, Attempt: attempt}
	}
	for _, c := range []struct {
		name        string
		ref         schemas.LogRef
		from, limit int
		lines       []string
		total       int
		complete    bool
	}{
		{"the whole log", schemas.LogRef{Job: 5, Host: 0, Attempt: 1}, 0, 100, []string{"a", "", "c"}, 3, true},
		{"a page", schemas.LogRef{Job: 5, Host: 0, Attempt: 1}, 1, 1, []string{""}, 3, true},
		{"the last page", schemas.LogRef{Job: 5, Host: 0, Attempt: 1}, 2, 100, []string{"c"}, 3, true},
		{"past the end", schemas.LogRef{Job: 5, Host: 0, Attempt: 1}, 3, 100, []string{}, 3, true},
		{"no output", schemas.LogRef{Job: 5, Host: 1, Attempt: 1}, 0, 100, []string{}, 0, true},
		{"one empty line", schemas.LogRef{Job: 5, Host: 2, Attempt: 1}, 0, 100, []string{""}, 1, true},
		{"still running", schemas.LogRef{Job: 5, Host: 3, Attempt: 1}, 0, 100, []string{}, 0, false},
		{"an attempt a retry superseded", schemas.LogRef{Job: 5, Host: 4, Attempt: 1}, 0, 100, []string{"boom"}, 1, true},
		{"the retry, running", schemas.LogRef{Job: 5, Host: 4, Attempt: 2}, 0, 100, []string{}, 0, false},
		{"a result without a log", schemas.LogRef{Job: 5, Step: 1, Attempt: 1}, 0, 100, []string{}, 0, false},
		{"a unit without a result", schemas.LogRef{Job: 5, Host: 9, Attempt: 1}, 0, 100, []string{}, 0, false},
		{"an upload unit", schemas.LogRef{Job: 5, Phase: schemas.PhaseUpload, Attempt: 1}, 0, 100, []string{}, 0, false},
		{"no such job", schemas.LogRef{Job: 6, Attempt: 1}, 0, 100, []string{}, 0, false},
		{"a larger job's", seg(0, 2), 0, 100, []string{"second"}, 1, true},
		{"a larger job's superseded attempt", seg(0, 1), 1, 100, []string{"boom"}, 2, true},
		{"a larger job's attempt not there yet", seg(0, 3), 0, 100, []string{}, 0, false},
		{"a larger job's result without a log", seg(1, 1), 0, 100, []string{}, 0, false},
		{"a larger job's unit without a result", seg(2, 1), 0, 100, []string{}, 0, false},
		{"a larger job's, its state not read", schemas.LogRef{Job: 9, Host: 3, Attempt: 1}, 0, 100, []string{"no state read"}, 1, true},
		{"a larger job's segment not written yet", schemas.LogRef{Job: 8, Attempt: 1}, 0, 100, []string{}, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := r.Read(ctx, c.ref, c.from, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			want := schemas.LogPage{From: c.from, To: c.from + len(c.lines), Total: c.total, Complete: c.complete, Lines: c.lines}
			if fmt.Sprintf("%#v", p) != fmt.Sprintf("%#v", want) {
				t.Errorf("got %+v, want %+v", p, want)
			}
		})
	}
	// the same log as one final LOGS chunk reads the same
	chunked := schemas.LogRef{Job: 7, Attempt: 1}
	m := nats.NewMsg(schemas.LogRef{Job: 7, Attempt: 1, Pool: schemas.DefaultPool, Agent: "a1"}.Subject())
	m.Data = []byte("a\n\nc")
	m.Header.Set(schemas.HdrFirstLine, "0")
	m.Header.Set(schemas.HdrLineCount, "3")
	m.Header.Set(schemas.HdrFinal, "1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, pg := range [][2]int{{0, 100}, {1, 1}, {2, 100}, {3, 100}} {
		got, err1 := r.Read(ctx, schemas.LogRef{Job: 5, Attempt: 1}, pg[0], pg[1])
		want, err2 := r.Read(ctx, chunked, pg[0], pg[1])
		if err1 != nil || err2 != nil || fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
			t.Errorf("page %v: inline %+v (%v), chunk %+v (%v)", pg, got, err1, want, err2)
		}
	}
}
