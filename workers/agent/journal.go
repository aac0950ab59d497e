package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// journal is the agent's local record of the executions it started, so a
// redelivered task is never silently run twice: an execution that started
// in an earlier life of the agent and never ended is reported interrupted,
// and one that ended has its report sent again.
//
// It is an append-only file of JSON lines, compacted at open. Records are
// written (not fsynced) before a script starts: they survive the agent's
// death, not the machine's.
type journal struct {
	mu      sync.Mutex
	f       *os.File
	path    string
	entries map[string]*journalEntry
}

type journalEntry struct {
	Op    string        `json:"op"` // start, pgid, end
	Exec  string        `json:"exec"`
	Task  *schemas.Task `json:"task,omitempty"`
	Pgid  int           `json:"pgid,omitempty"`
	Start uint64        `json:"start,omitempty"` // the group leader's start time, see procStart
	// At is when the execution started (the start its reports give).
	At     time.Time       `json:"at,omitzero"`
	Report *schemas.Report `json:"report,omitempty"`
}

// maxEnded bounds how many ended executions a compacted journal keeps.
const maxEnded = 20000

func openJournal(dir, agentID string) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal dir: %w", err)
	}
	j := &journal{path: filepath.Join(dir, "agent-"+agentID+".journal"), entries: map[string]*journalEntry{}}
	var order []string
	if f, err := os.Open(j.path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e journalEntry
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue // a torn last line
			}
			cur := j.entries[e.Exec]
			switch e.Op {
			case "start":
				if cur == nil {
					order = append(order, e.Exec)
				}
				j.entries[e.Exec] = &journalEntry{Op: "start", Exec: e.Exec, Task: e.Task, At: e.At}
			case "pgid":
				if cur != nil {
					cur.Pgid, cur.Start = e.Pgid, e.Start
				}
			case "end":
				if cur == nil {
					order = append(order, e.Exec)
					cur = &journalEntry{Exec: e.Exec}
					j.entries[e.Exec] = cur
				}
				cur.Op, cur.Report = "end", e.Report
			}
		}
		f.Close()
	}
	// compact: keep every unfinished entry and the newest ended ones
	if len(order) > maxEnded {
		for _, ex := range order[:len(order)-maxEnded] {
			if j.entries[ex].Op == "end" {
				delete(j.entries, ex)
			}
		}
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, ex := range order {
		if e, ok := j.entries[ex]; ok {
			b, _ := json.Marshal(e)
			w.Write(append(b, '\n'))
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	f.Close()
	if err := os.Rename(tmp, j.path); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if j.f, err = os.OpenFile(j.path, os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return j, nil
}

func (j *journal) write(e journalEntry) error {
	b, _ := json.Marshal(e)
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	return nil
}

// lookup returns what the journal knows of an execution.
func (j *journal) lookup(exec string) (journalEntry, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.entries[exec]
	if !ok {
		return journalEntry{}, false
	}
	return *e, true
}

// start records the intent to run, before the process exists, and when:
// the start the execution's reports give, even those of a later life of
// the agent that finds it interrupted.
func (j *journal) start(t *schemas.Task, at time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := &journalEntry{Op: "start", Exec: t.ExecID, Task: t, At: at}
	j.entries[t.ExecID] = e
	return j.write(*e)
}

// pgid records the process group and its leader's start time, so a
// restarted agent can kill orphans (and only them).
func (j *journal) pgid(exec string, pgid int, start uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e := j.entries[exec]; e != nil {
		e.Pgid, e.Start = pgid, start
	}
	return j.write(journalEntry{Op: "pgid", Exec: exec, Pgid: pgid, Start: start})
}

// end records the final report.
func (j *journal) end(r *schemas.Report) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.entries[r.ExecID]
	if e == nil {
		e = &journalEntry{Exec: r.ExecID}
		j.entries[r.ExecID] = e
	}
	e.Op, e.Report = "end", r
	return j.write(journalEntry{Op: "end", Exec: r.ExecID, Report: r})
}

// unfinished lists executions started in an earlier life that never ended.
func (j *journal) unfinished() []journalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []journalEntry
	for _, e := range j.entries {
		if e.Op == "start" {
			out = append(out, *e)
		}
	}
	return out
}

func (j *journal) close() error { return j.f.Close() }
