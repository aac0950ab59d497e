package agent

// This file holds what an agent does at start for the executions an
// earlier life of it left: report them, and publish the output lines the
// LOGS stream is missing.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// recover reports executions an earlier life of this agent started and
// never finished as interrupted, and kills their process groups. Output
// the script wrote that never reached the LOGS stream is published first.
func (a *Agent) recover(ctx context.Context) error {
	unfinished := a.journal.unfinished()
	spools := map[string]bool{}
	for _, e := range unfinished {
		killOrphan(e.Pgid, e.Start)
		spools[spoolPath(a.spool, e.Exec)] = true
	}
	if left, err := os.ReadDir(a.spool); err == nil {
		for _, f := range left {
			spools[filepath.Join(a.spool, f.Name())] = true
		}
	}
	if len(spools) > 0 { // scanning /proc is not free: only with something to guard
		killWriters(spools)
	}
	for _, e := range unfinished {
		if e.Task == nil {
			continue
		}
		r := a.report(e.Task, schemas.ReportFinished)
		r.Status, r.StartedAt, r.EndedAt = schemas.HostInterrupted, e.At, time.Now().UTC()
		r.Error = "the agent restarted while the task ran; it was not run again"
		if e.Task.Kind == schemas.StepScript {
			lines, err := a.resumeLog(ctx, e.Task)
			if err != nil {
				a.log.Warn("output of an interrupted execution not all stored", "exec", e.Exec, "err", err)
			}
			r.Lines = lines
		}
		if err := a.journal.end(&r); err != nil {
			return err
		}
		if err := a.publish(ctx, &r); err != nil {
			return err
		}
		a.log.Warn("execution interrupted by an agent restart", "exec", e.Exec, "lines", r.Lines)
	}
	// every spool file left belongs to an execution that has ended
	if old, err := os.ReadDir(a.spool); err == nil {
		for _, f := range old {
			os.Remove(filepath.Join(a.spool, f.Name()))
		}
	}
	return nil
}

// resumeLog publishes the lines of an interrupted execution's spool file
// that the LOGS stream does not have yet, and returns the line count.
func (a *Agent) resumeLog(ctx context.Context, t *schemas.Task) (int, error) {
	subject := a.logSubject(t)
	stored := 0
	last, err := a.lastLogChunk(ctx, subject)
	switch {
	case err == nil:
		first, _ := strconv.Atoi(last.Header.Get(schemas.HdrFirstLine))
		n, _ := strconv.Atoi(last.Header.Get(schemas.HdrLineCount))
		stored = first + n
		if last.Header.Get(schemas.HdrFinal) != "" {
			return stored, nil // the whole log made it before the agent died
		}
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		// no direct get (a replicated LOGS stream without it): resend
		// the whole spool; readers take each line once however chunks overlap
		a.log.Warn("stored output of an interrupted execution not readable; resending all of it", "exec", t.ExecID, "err", err)
	}
	// the journal holds the task sealed: open it, so that the log masks
	// the sensitive values; output that cannot be masked is not published
	open, err := a.openTask(t)
	if err != nil {
		return stored, fmt.Errorf("output of %s not published, its sensitive values do not open: %w", t.ExecID, err)
	}
	logs := newLogStream(a.js, subject, open, nil)
	logs.skip = stored
	if err := readSpool(spoolPath(a.spool, t.ExecID), logs.lineBytes); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("spool of an interrupted execution", "exec", t.ExecID, "err", err)
	}
	return logs.Close(ctx)
}
