package logindex

import (
	"context"
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
