package schemas

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
)

// startJetStream starts an embedded JetStream server for one test and
// connects to it; both end when the test does.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestEnsureLeavesExistingStreamsAlone(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	top := DefaultTopology()
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatalf("second ensure: %v", err)
	}
	other := top
	other.LogMaxAge /= 2
	if err := other.Ensure(ctx, js); err != nil {
		t.Fatalf("ensure with other settings: %v", err)
	}
	st, _ := js.Stream(ctx, StreamLogs)
	if got := st.CachedInfo().Config.MaxAge; got != top.LogMaxAge {
		t.Errorf("LOGS max age changed to %s by a process with other settings", got)
	}
	for _, b := range top.Buckets() {
		if _, err := js.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
}

// The command stream keeps ids for the Idempotency-Key contract; the task
// and result streams only for as long as a redo usually takes, since the
// agent's journal and the fold make a late duplicate harmless, and their
// ids are two per host run.
func TestDuplicateWindows(t *testing.T) {
	js := startJetStream(t)
	top := DefaultTopology()
	if err := top.Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Duration{StreamJobs: 10 * time.Minute, StreamTasks: 2 * time.Minute, StreamResults: 2 * time.Minute} {
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Duplicates; got != want {
			t.Errorf("%s keeps message ids for %s, want %s", name, got, want)
		}
	}
}

func TestSubjectsReadBack(t *testing.T) {
	for _, c := range []struct {
		name    string
		subject string
		command bool
		agent   string // "" when it is no task subject
	}{
		{"submit", SubjSubmit, true, ""},
		{"operation", SubjOp, true, ""},
		{"task", TaskSubject(DefaultPool, "web-1", 42), false, "web-1"},
		{"simulated task", TaskSubject("sim", "sim-0007", 3), false, "sim-0007"},
		{"result", ResultSubject(DefaultPool, "web-1", 42), false, ""},
		{"sweeper's kick", SweeperResultSubject(42), false, ""},
		{"log", LogSubject(42, 0, 1, 1), false, ""},
		{"not fleetjob's", "fleetjob.task.a.web-1", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := IsCommandSubject(c.subject); got != c.command {
				t.Errorf("IsCommandSubject(%q): got %v, want %v", c.subject, got, c.command)
			}
			agent, ok := AgentOfTaskSubject(c.subject)
			if agent != c.agent || ok != (c.agent != "") {
				t.Errorf("AgentOfTaskSubject(%q): got %q %v, want %q", c.subject, agent, ok, c.agent)
			}
		})
	}
}

func TestKVSubjectIsAPut(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if err := DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if got, want := KVSubject(BucketJobs, KeyResultSegmentOf(7, 1, "", 600)), "$KV.jobs.7.1.g2"; got != want {
		t.Errorf("KVSubject: got %q, want %q", got, want)
	}
	if _, err := js.Publish(ctx, KVSubject(BucketJobs, KeyResultSegment(7, 1, PhaseUpload, 0)), []byte("stored")); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, KeyResultSegment(7, 1, PhaseUpload, 0))
	if err != nil {
		t.Fatalf("a value published on its KV subject cannot be read back: %v", err)
	}
	if got := string(e.Value()); got != "stored" {
		t.Errorf("value: got %q, want %q", got, "stored")
	}
}

// Result subjects say who reported: an agent of a pool, or the sweeper in
// a shape no agent's subject can take.
func TestParseResultSubject(t *testing.T) {
	for subj, want := range map[string]ResultFrom{
		ResultSubject(DefaultPool, "web-1", 42):  {Job: 42, Pool: DefaultPool, Agent: "web-1"},
		ResultSubject("sim", "sim-7", 3):         {Job: 3, Pool: "sim", Agent: "sim-7"},
		SweeperResultSubject(9):                  {Job: 9, Sweeper: true},
		ResultSubject(DefaultPool, "sweeper", 9): {Job: 9, Pool: DefaultPool, Agent: "sweeper"},
		"fleetjob.result.3.a.web-1.42":           {Job: 42, Pool: DefaultPool, Agent: "web-1"},
		PartitionedSweeperResultSubject(9, 8):    {Job: 9, Sweeper: true},
		"fleetjob.result.3.sweeper.-.9":          {Job: 9, Pool: "sweeper", Agent: "-"},
	} {
		got, err := ParseResultSubject(subj)
		if err != nil || got != want {
			t.Errorf("ParseResultSubject(%q): got %+v %v, want %+v", subj, got, err, want)
		}
	}
	for _, bad := range []string{"fleetjob.result.42", "fleetjob.result.a.web-1", "fleetjob.result.a.web-1.x",
		"fleetjob.result.a.b.c.1", "fleetjob.result.a.*.1", "fleetjob.log.job.a.w.1.0.0.1",
		"fleetjob.result.x.sweeper.~.1", "fleetjob.result.1.2.3.4.5"} {
		if f, err := ParseResultSubject(bad); err == nil {
			t.Errorf("ParseResultSubject(%q) accepted: %+v", bad, f)
		}
	}
}

// A segment keeps each unit's latest attempt, once: a redelivered result
// changes nothing, an earlier attempt never replaces a later one.
func TestResultSegmentMerge(t *testing.T) {
	var seg ResultSegmentValue
	r := func(idx, attempt int, st HostStatus) HostResult {
		return HostResult{Index: idx, Attempt: attempt, Status: st}
	}
	if !seg.Merge([]HostResult{r(3, 1, HostFailed), r(5, 1, HostSuccess)}) {
		t.Fatal("first results: no change")
	}
	if seg.Merge([]HostResult{r(3, 1, HostFailed)}) {
		t.Error("the same result again changed the segment")
	}
	if !seg.Merge([]HostResult{r(3, 2, HostSuccess)}) || seg.Merge([]HostResult{r(3, 1, HostFailed)}) {
		t.Error("a retry's result must replace the first attempt's, and never the other way")
	}
	if got, ok := seg.Find(3); !ok || got.Attempt != 2 || got.Status != HostSuccess || len(seg.Results) != 2 {
		t.Errorf("unit 3: %+v of %d results", got, len(seg.Results))
	}
	if KeyResultSegmentOf(9, 0, "", 255) != "9.0.g0" || KeyResultSegmentOf(9, 0, PhaseUpload, 256) != "9.0.ug1" {
		t.Error("segment keys")
	}
}

// A result with an inline log that a retry's result replaces moves to the
// segment's earlier results, and is found by its attempt; one without a
// log is not kept; the oldest go past MaxSegmentEarlier.
func TestResultSegmentKeepsEarlierLogs(t *testing.T) {
	var seg ResultSegmentValue
	r := func(idx, attempt int, log string) HostResult {
		hr := HostResult{Index: idx, Attempt: attempt, Status: HostFailed}
		if log != "" {
			hr.Log = &log
		}
		return hr
	}
	seg.Merge([]HostResult{r(1, 1, "first"), r(2, 1, "")})
	seg.Merge([]HostResult{r(1, 2, "second"), r(2, 2, "")})
	seg.Merge([]HostResult{r(1, 2, "second")}) // redelivered
	for _, c := range []struct {
		idx, attempt int
		want         string // "" not found
	}{{1, 1, "first"}, {1, 2, "second"}, {1, 3, ""}, {2, 1, ""}, {3, 1, ""}} {
		got, ok := seg.Attempt(c.idx, c.attempt)
		switch {
		case c.want == "" && ok && got.Log != nil:
			t.Errorf("unit %d attempt %d: found %q", c.idx, c.attempt, *got.Log)
		case c.want != "" && (!ok || got.Log == nil || *got.Log != c.want || got.Attempt != c.attempt):
			t.Errorf("unit %d attempt %d: got %+v %v, want %q", c.idx, c.attempt, got, ok, c.want)
		}
	}
	if len(seg.Earlier) != 1 {
		t.Errorf("earlier: %+v, want unit 1's attempt 1 once", seg.Earlier)
	}
	for a := 3; a < 3+MaxSegmentEarlier; a++ {
		seg.Merge([]HostResult{r(1, a, "again")})
	}
	if len(seg.Earlier) != MaxSegmentEarlier {
		t.Fatalf("earlier: %d, want at most %d", len(seg.Earlier), MaxSegmentEarlier)
	}
	if _, ok := seg.Attempt(1, 1); ok {
		t.Error("the oldest earlier result is still there past the bound")
	}
	if got, ok := seg.Attempt(1, 2); !ok || *got.Log != "second" {
		t.Errorf("attempt 2: %+v %v", got, ok)
	}
}

// The RESULTS stream's transform files an agent's report under the
// partition ResultPartition computes, so a sweeper's kick, published
// straight into its partition, meets the job's reports there.
func TestResultPartitionsAgreeWithTheServer(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	top := DefaultTopology()
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if n := ResultPartitionsOf(st.CachedInfo().Config); n != top.ResultPartitions {
		t.Fatalf("ResultPartitionsOf: got %d, want %d", n, top.ResultPartitions)
	}
	for job := int64(1); job <= 200; job++ {
		ack, err := js.Publish(ctx, ResultSubject(DefaultPool, "web-1", job), []byte("r"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		want := "fleetjob.result." + strconv.Itoa(ResultPartition(job, top.ResultPartitions)) + ".a.web-1." + strconv.FormatInt(job, 10)
		if m.Subject != want || StoredResultSubject(DefaultPool, "web-1", job, top.ResultPartitions) != want {
			t.Fatalf("job %d stored on %q, want %q", job, m.Subject, want)
		}
		kick := PartitionedSweeperResultSubject(job, top.ResultPartitions)
		ack, err = js.Publish(ctx, kick, []byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if m, err = st.GetMsg(ctx, ack.Sequence); err != nil || m.Subject != kick {
			t.Fatalf("kick of job %d stored on %q (%v), want %q unchanged", job, m.Subject, err, kick)
		}
	}
}

// Unit tokens and log subjects read back what wrote them.
func TestUnitTokensReadBack(t *testing.T) {
	for _, u := range []struct {
		phase string
		idx   int
	}{{"", 0}, {"", 19999}, {PhaseUpload, 3}} {
		phase, idx, ok := ParseUnitToken(UnitToken(u.phase, u.idx))
		if !ok || phase != u.phase || idx != u.idx {
			t.Errorf("%q read back as %q %d %v", UnitToken(u.phase, u.idx), phase, idx, ok)
		}
		ref := LogRef{Job: 42, Step: 2, Phase: u.phase, Host: u.idx, Attempt: 3, Pool: "a", Agent: "ag-1"}
		if got, ok := LogRefOf(ref.Subject()); !ok || got != ref {
			t.Errorf("%s read back as %+v %v", ref.Subject(), got, ok)
		}
	}
	for _, bad := range []string{"", "u", "x1", "1u"} {
		if _, _, ok := ParseUnitToken(bad); ok {
			t.Errorf("%q read as a unit token", bad)
		}
	}
	if _, ok := LogRefOf("fleetjob.log.job.a.ag-1.42.2.ux.3"); ok {
		t.Error("a subject with a bad unit token read as a log")
	}
}
