package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fleetjob/fleetjob/internal/osaccount"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/artifactrelay"
	"github.com/fleetjob/fleetjob/workers/filexfer"
)

// File tasks write their log as JSON lines, one schemas.FileLog each: every
// progress record and the final one per file, so a reader takes the last
// line of each file as its state.

// fileCtx gives a file task its context: ended by the step's timeout or by
// a kill (stop, shutdown).
func (e *execution) fileCtx() (context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(e.task.Timeout)*time.Second)
	e.mu.Lock()
	killed := e.reason != ""
	e.cancel = cancel
	e.mu.Unlock()
	if killed {
		cancel()
	}
	return ctx, func() { cancel(); close(e.done) }
}

// endedBy turns a transfer error into the outcome: a kill or the timeout
// wins over the error it caused.
func (e *execution) endedBy(ctx context.Context, err error) outcome {
	e.mu.Lock()
	reason := e.reason
	e.mu.Unlock()
	switch {
	case reason != "":
		return outcome{status: statusFor(reason), err: "killed: " + reason}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return outcome{status: schemas.HostTimeout, err: fmt.Sprintf("transfer not done within the %ds timeout", e.task.Timeout)}
	case err != nil:
		return failed("%v", err)
	}
	return outcome{status: schemas.HostSuccess}
}

// artifacts is a file task's access to its files: through the artifact
// relay, on this agent's own transfer subjects; the agent has no access
// to the store itself.
func (a *Agent) artifacts(t *schemas.Task) *artifactrelay.Client {
	if t.Phase == schemas.PhaseUpload {
		return artifactrelay.Uploads(a.nc, schemas.DefaultPool, a.cfg.ID, t.JobID, t.Step, t.Host)
	}
	return artifactrelay.Downloads(a.nc, schemas.DefaultPool, a.cfg.ID, t.JobID, t.Step)
}

func fileLogger(logs *logStream) func(schemas.FileLog) {
	return func(l schemas.FileLog) {
		b, _ := json.Marshal(l)
		logs.Line(string(b))
	}
}

// actAs starts a worker that does a file task's filesystem calls as the
// task's account (empty: the agent itself, with no worker).
func actAs(account string) (*osaccount.Worker, error) {
	if account == "" {
		return nil, nil
	}
	id, err := osaccount.Lookup(account)
	if err != nil {
		return nil, err
	}
	return id.Start()
}

func mbps(mb int) int64 { return int64(mb) << 20 }

// runUpload resolves a source's paths on this host and stores the files
// in the artifacts store.
func (a *Agent) runUpload(e *execution, logs *logStream) outcome {
	ctx, done := e.fileCtx()
	defer done()
	up := e.task.Upload
	if up == nil {
		return failed("upload task without its paths")
	}
	self := schemas.Host{CloudID: a.cfg.CloudID, IP: a.cfg.IP}
	log := fileLogger(logs)
	as, err := actAs(up.Account)
	if err != nil {
		return failed("source account: %v", err)
	}
	defer as.Close()
	// Paths resolve as the account too: a directory it may not enter
	// hides its files.
	var files, missing []string
	if err := as.Do(func() (err error) {
		files, missing, err = filexfer.Resolve(up.Paths)
		return err
	}); err != nil {
		return failed("resolve source paths: %v", err)
	}
	for _, m := range missing {
		log(schemas.FileLog{Mode: schemas.FileModeUpload, SourceHost: self, SourcePath: m, Status: schemas.FileFailed,
			Content: fmt.Sprintf("[%s] source file %s does not exist", time.Now().Format(time.DateTime), m)})
	}
	if len(missing) > 0 && up.Strict {
		return failed("source file not found: %s", strings.Join(missing, ", "))
	}
	if len(files) == 0 {
		return failed("no source file matched %s", strings.Join(up.Paths, ", "))
	}
	obs := a.artifacts(e.task)
	entries, err := filexfer.UploadAs(ctx, as, obs, up.Prefix, self, files, mbps(up.LimitMB), log)
	o := e.endedBy(ctx, err)
	o.files = entries
	return o
}

// runDownload fetches a file step's files into its destination directory.
func (a *Agent) runDownload(e *execution, logs *logStream) outcome {
	ctx, done := e.fileCtx()
	defer done()
	dl := e.task.Download
	if dl == nil {
		return failed("download task without its files")
	}
	if err := protectedDestination(dl.Destination, dl.Files); err != nil {
		return failed("%v", err)
	}
	as, err := actAs(dl.Owner)
	if err != nil {
		return failed("destination account: %v", err)
	}
	defer as.Close()
	if dl.MustExist {
		var fi os.FileInfo
		if err := as.Do(func() (err error) { fi, err = os.Stat(dl.Destination); return err }); err != nil || !fi.IsDir() {
			return failed("destination directory %s does not exist (strict transfer mode)", dl.Destination)
		}
	}
	obs := a.artifacts(e.task)
	entries := make([]schemas.FileEntry, 0, len(dl.Files))
	for _, f := range dl.Files {
		if f.SHA256 == "" { // an artifact source: describe it from the store
			info, err := filexfer.ArtifactEntry(ctx, obs, f.Object)
			if err != nil {
				return failed("%v", err)
			}
			f = info
		}
		entries = append(entries, f)
	}
	var mode *uint32
	if dl.Mode != "" {
		spec := schemas.FileSpec{Mode: dl.Mode}
		if m, ok := spec.FileMode(); ok {
			mode = &m
		}
	}
	self := schemas.Host{CloudID: a.cfg.CloudID, IP: a.cfg.IP}
	err = filexfer.DownloadAs(ctx, as, obs, entries, dl.Destination, self, mode, "", mbps(dl.LimitMB), fileLogger(logs))
	return e.endedBy(ctx, err)
}
