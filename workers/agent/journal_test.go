package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestJournalSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, "a1")
	if err != nil {
		t.Fatal(err)
	}
	t1 := &schemas.Task{ExecID: "1.0.0.1", JobID: 1}
	t2 := &schemas.Task{ExecID: "2.0.0.1", JobID: 2}
	at := time.Date(2026, 11, 25, 1, 2, 3, 456789, time.UTC)
	for _, err := range []error{
		j.start(t1, at), j.pgid(t1.ExecID, 4242, 777), j.start(t2, at.Add(time.Second)),
		j.end(&schemas.Report{ExecID: t2.ExecID, Status: schemas.HostSuccess}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	// a torn last line, as a crash mid-write leaves it
	f, _ := os.OpenFile(filepath.Join(dir, "agent-a1.journal"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"end","exec":"1.0.0.1","rep`)
	f.Close()

	j, err = openJournal(dir, "a1")
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	un := j.unfinished()
	if len(un) != 1 || un[0].Exec != t1.ExecID || un[0].Pgid != 4242 || un[0].Start != 777 || un[0].Task.JobID != 1 {
		t.Fatalf("unfinished: %+v, want 1.0.0.1 with its pgid and task", un)
	}
	if !un[0].At.Equal(at) {
		t.Errorf("unfinished execution started at %v, want %v (its interrupted report gives it)", un[0].At, at)
	}
	if e, ok := j.lookup(t2.ExecID); !ok || e.Op != "end" || e.Report.Status != schemas.HostSuccess {
		t.Errorf("ended execution: %+v %v", e, ok)
	}
	if _, ok := j.lookup("9.9.9.9"); ok {
		t.Error("unknown execution found")
	}
}

func TestJournalCompacts(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, "a1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxEnded+50; i++ {
		r := &schemas.Report{ExecID: schemas.ExecID(int64(i), 0, 0, 1)}
		j.start(&schemas.Task{ExecID: r.ExecID}, time.Time{})
		j.end(r)
	}
	j.start(&schemas.Task{ExecID: "running"}, time.Time{})
	j.close()
	j, err = openJournal(dir, "a1")
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if n := len(j.entries); n != maxEnded {
		t.Errorf("%d entries after compaction, want the newest %d", n, maxEnded)
	}
	if _, ok := j.lookup("running"); !ok {
		t.Error("compaction dropped an unfinished execution")
	}
	if _, ok := j.lookup(schemas.ExecID(0, 0, 0, 1)); ok {
		t.Error("compaction kept the oldest ended execution")
	}
}
