package orchestrator

// This file holds file steps. A file step runs in two phases: its upload
// units (one per source and source host) put the files into the artifacts
// store once; then its targets download them, with the step's concurrency
// and rolling batches.

import (
	"fmt"
	"path"

	"github.com/fleetjob/fleetjob/schemas"
)

// startFiles prepares a file step: artifact sources go straight into the
// manifest; host sources need their upload units to run first.
func (t *txn) startFiles(step int) {
	ss := &t.st.Steps[step]
	f := t.spec.Steps[step].File
	ss.Manifest = nil
	for _, src := range f.Sources {
		if src.Artifact != "" {
			ss.Manifest = append(ss.Manifest, schemas.FileEntry{Object: src.Artifact, Name: path.Base(src.Artifact)})
		}
	}
	ss.Phase = ""
	if len(ss.Uploads.Status) > 0 {
		ss.Phase = schemas.PhaseUpload
	}
}

// addFiles records what an upload unit stored.
func (t *txn) addFiles(step int, files []schemas.FileEntry) {
	ss := &t.st.Steps[step]
	have := map[string]bool{}
	for _, e := range ss.Manifest {
		have[e.Object] = true
	}
	for _, e := range files {
		if !have[e.Object] {
			ss.Manifest = append(ss.Manifest, e)
			have[e.Object] = true
		}
	}
	t.changed = true
}

// finishUploads ends the upload phase once every upload unit is final: the
// targets then download, unless a strict step lost a source, nothing was
// uploaded, or two files would land on the same name, in which case every
// target fails with the reason.
func (t *txn) finishUploads(step int) {
	ss := &t.st.Steps[step]
	f := t.spec.Steps[step].File
	ss.Phase, t.changed = "", true
	if t.st.Status == schemas.JobStopping {
		return
	}
	failed := 0
	for _, s := range ss.Uploads.Status {
		if s != schemas.HostSuccess {
			failed++
		}
	}
	reason := ""
	switch {
	case failed > 0 && f.IsStrict():
		reason = fmt.Sprintf("file source failed: %d of %d source hosts did not upload their files", failed, len(ss.Uploads.Status))
	case len(ss.Manifest) == 0:
		reason = "file source failed: no source file to send"
	default:
		names := map[string]string{}
		for _, e := range ss.Manifest {
			if other, dup := names[e.Name]; dup {
				reason = fmt.Sprintf("two source files would both be written as %q: %s and %s", e.Name, other, e.SourcePath)
				break
			}
			names[e.Name] = e.SourcePath
		}
	}
	if reason == "" {
		return
	}
	for i, s := range ss.Hosts.Status {
		if !s.Final() {
			t.finalize(unit{step: step, idx: i}, schemas.HostFailed, reason)
		}
	}
}

// retryUploads sends a file step back to its upload phase for the upload
// units that did not succeed (all of them when all is set).
func (t *txn) retryUploads(step int, all bool) {
	ss := &t.st.Steps[step]
	if t.spec.Steps[step].File == nil || len(ss.Uploads.Status) == 0 {
		return
	}
	n := 0
	for i, s := range ss.Uploads.Status {
		if all || s != schemas.HostSuccess {
			ss.Uploads.Retry(i, t.st.Sec(t.now))
			n++
		}
	}
	if n > 0 {
		ss.Phase = schemas.PhaseUpload
	}
}
