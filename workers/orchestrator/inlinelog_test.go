package orchestrator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// Every script task asks for an inline log, a larger job's with the
// smaller bound of its segments; the log a finished report carries goes to
// the stored result only: not to the cache row, nor to the event.
func TestInlineLogGoesToTheResultOnly(t *testing.T) {
	short, long := "one\ntwo", strings.Repeat("x", schemas.MaxInlineLog+1)
	oldAgent := strings.Repeat("o", schemas.MaxInlineLog) // past InlineMax: an agent that does not know it
	larger := schemas.MaxInlineResults + 1
	for _, c := range []struct {
		name       string
		hosts      int
		log        *string
		wantInline bool // the task asks for it
		wantMax    int  // the task's InlineMax
		want       *string
	}{
		{"a small job", 1, &short, true, 0, &short},
		{"a small job, no output", 1, new(string), true, 0, new(string)},
		{"a small job, its log in LOGS", 1, nil, true, 0, nil},
		{"a small job, a log past the cap (refused)", 1, &long, true, 0, nil},
		{"a larger job", larger, &short, true, schemas.MaxSegmentInlineLog, &short},
		{"a larger job, its log in LOGS", larger, nil, true, schemas.MaxSegmentInlineLog, nil},
		{"a larger job, an agent past InlineMax (kept)", larger, &oldAgent, true, schemas.MaxSegmentInlineLog, &oldAgent},
		{"a larger job, a log past the cap (refused)", larger, &long, true, schemas.MaxSegmentInlineLog, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ips []string
			dir := fakeDir{}
			for i := 1; i <= c.hosts; i++ {
				ip := fmt.Sprintf("10.0.0.%d", i)
				ips, dir[ip] = append(ips, ip), true
			}
			spec, st := newJob(t, 0, ips...)
			tx := newTxn(spec, st, t0, dir)
			tx.advance()
			if got := tx.tasks[0].task; got.InlineLog != c.wantInline || got.InlineMax != c.wantMax {
				t.Errorf("task's InlineLog, InlineMax: got %v %d, want %v %d", got.InlineLog, got.InlineMax, c.wantInline, c.wantMax)
			}
			r := finished(0, schemas.HostSuccess)
			r.Lines, r.Log = 2, c.log
			tx = newTxn(spec, st, t0.Add(time.Second), dir)
			tx.apply(r)
			if len(tx.results) != 1 {
				t.Fatalf("results: %+v, want host 0's", tx.results)
			}
			if got := tx.results[0].Log; !sameLog(got, c.want) {
				t.Errorf("stored result's log: got %v, want %v", show(got), show(c.want))
			}
			if row := tx.row(unit{idx: 0}); row.Log != nil {
				t.Errorf("cache row carries a log: %q", *row.Log)
			}
			for _, ev := range tx.events {
				if hr, ok := ev.Data.(schemas.HostResult); ok && hr.Log != nil {
					t.Errorf("event %s carries a log: %q", ev.Kind, *hr.Log)
				}
			}
		})
	}
}

// A retry supersedes the unit's result in the state: one with an inline
// log is collected to be kept apart (the reader serves it for ?attempt=1);
// a replayed result's event and row carry no log.
func TestRetryKeepsTheSupersededInlineLog(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true}
	newTxn(spec, st, t0, dir).advance()
	tx := newTxn(spec, st, t0.Add(time.Second), dir)
	boom := "boom"
	r := finished(0, schemas.HostFailed)
	r.Lines, r.Log = 1, &boom
	tx.apply(r)
	ok := finished(1, schemas.HostSuccess)
	ok.Log = new(string)
	tx.apply(ok)
	tx.advance()
	st.PutResults(tx.results) // storeResults of a small job
	if st.Status != schemas.JobPartial {
		t.Fatalf("job: %s, want partial", st.Status)
	}

	tx = newTxn(spec, st, t0.Add(2*time.Second), dir)
	tx.replayResult("7.0.0.1", st.Results[0])
	if row := tx.row(unit{idx: 0}); row.Log != nil {
		t.Errorf("replayed row carries a log")
	}
	if hr := tx.events[0].Data.(schemas.HostResult); tx.events[0].Kind != events.HostFinished || hr.Log != nil {
		t.Errorf("replayed event %s carries a log", tx.events[0].Kind)
	}

	tx = newTxn(spec, st, t0.Add(3*time.Second), dir)
	if err := tx.op(schemas.OpCommand{JobID: 7, Step: 0, Op: schemas.OpRetryFailed}); err != nil {
		t.Fatal(err)
	}
	if len(tx.superseded) != 1 || tx.superseded[0].Index != 0 || tx.superseded[0].Attempt != 1 || !sameLog(tx.superseded[0].Log, &boom) {
		t.Fatalf("superseded: %+v, want host 0's attempt 1 with its log", tx.superseded)
	}
	if got := st.Steps[0].Hosts.AttemptOf(0); got != 2 {
		t.Errorf("host 0's attempt: got %d, want 2", got)
	}
}

func sameLog(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func show(s *string) string {
	if s == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", *s)
}
