package bkjob

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/schemas"
)

// get_job_instance_ip_log and batch_get_job_instance_ip_log (the seed).

// Log types.
const (
	bkLogScript = 1
	bkLogFile   = 2
)

// Bounds on what one answer reads from a log.
const (
	bkMaxScriptLogLines = 20000  // per host
	bkMaxFileLogLines   = 100000 // JSON records per file task
	bkLogReadPage       = 5000
)

// bkIPLogRequest is get_job_instance_ip_log's parameters: the host by
// bk_host_id, or by bk_cloud_id and ip.
type bkIPLogRequest struct {
	bkCommon
	JobInstanceID  bkInt  `json:"job_instance_id"`
	StepInstanceID bkInt  `json:"step_instance_id"`
	HostID         bkInt  `json:"bk_host_id"`
	CloudID        bkInt  `json:"bk_cloud_id"`
	IP             string `json:"ip"`
}

// bkBatchLogRequest is batch_get_job_instance_ip_log's body.
type bkBatchLogRequest struct {
	bkCommon
	JobInstanceID  bkInt   `json:"job_instance_id"`
	StepInstanceID bkInt   `json:"step_instance_id"`
	HostIDList     []bkInt `json:"host_id_list"`
	IPList         []bkIP  `json:"ip_list"`
}

// bkFileLog is one file's transfer record in BlueKing's shape; dest_ip
// and dest_path only for downloads (mode 1).
type bkFileLog struct {
	Mode       int        `json:"mode"`
	SrcIP      bkHostRef  `json:"src_ip"`
	SrcPath    string     `json:"src_path"`
	DestIP     *bkHostRef `json:"dest_ip,omitempty"`
	DestPath   string     `json:"dest_path,omitempty"`
	Status     int        `json:"status"`
	LogContent string     `json:"log_content"`
	Size       string     `json:"size"`
	Speed      string     `json:"speed"`
	Process    string     `json:"process"`
}

// bkIPLogData is get_job_instance_ip_log's answer: log_content for a
// script step, file_logs for a file step.
type bkIPLogData struct {
	LogType int `json:"log_type"`
	bkHostRef
	LogContent *string      `json:"log_content,omitempty"`
	FileLogs   *[]bkFileLog `json:"file_logs,omitempty"`
}

type bkScriptTaskLog struct {
	bkHostRef
	LogContent string `json:"log_content"`
}

type bkFileTaskLog struct {
	bkHostRef
	FileLogs []bkFileLog `json:"file_logs"`
}

// bkBatchLogData is batch_get_job_instance_ip_log's answer. The seed's
// examples name the job task_instance_id, bk-job's code job_instance_id:
// both are sent.
type bkBatchLogData struct {
	LogType        int                `json:"log_type"`
	JobInstanceID  int64              `json:"job_instance_id"`
	TaskInstanceID int64              `json:"task_instance_id"`
	StepInstanceID int64              `json:"step_instance_id"`
	ScriptTaskLogs *[]bkScriptTaskLog `json:"script_task_logs,omitempty"`
	FileTaskLogs   *[]bkFileTaskLog   `json:"file_task_logs,omitempty"`
}

// bkStepLogs reads the logs of one step of one job.
type bkStepLogs struct {
	s     *Surface
	id    int64
	step  int
	spec  *schemas.JobSpec
	st    *schemas.JobState
	hosts *bkHostIndex
	rows  map[int]schemas.HostRow // targets' rows, read when needed
}

// bkOpenStep checks the ids and the scope and opens the step's logs.
func (s *Surface) bkOpenStep(ctx context.Context, sc schemas.Scope, id int64, stepID bkInt) (*bkStepLogs, error) {
	spec, st, err := s.bkJob(ctx, id, sc)
	if err != nil {
		return nil, err
	}
	step, err := bkStepIndex(id, stepID, spec)
	if err != nil {
		return nil, err
	}
	return &bkStepLogs{s: s, id: id, step: step, spec: spec, st: st, hosts: s.bkHosts(spec)}, nil
}

func bkStepIDParam(n bkInt, v *bkInvalid) {
	switch {
	case !n.Set:
		v.add("step_instance_id", "required")
	case n.V < 1:
		v.add("step_instance_id", "must be at least 1")
	}
}

func (l *bkStepLogs) file() *schemas.FileSpec { return l.spec.Steps[l.step].File }

func (l *bkStepLogs) logType() int {
	if l.file() != nil {
		return bkLogFile
	}
	return bkLogScript
}

// target returns the host's index among the step's targets, or -1.
func (l *bkStepLogs) target(h schemas.Host) int {
	for i, t := range l.spec.Steps[l.step].Targets {
		if t == h {
			return i
		}
	}
	return -1
}

// units returns the upload units (source hosts) of the step on host h.
func (l *bkStepLogs) units(h schemas.Host) []int {
	var out []int
	if l.file() == nil {
		return nil
	}
	for i, u := range l.file().UploadUnits() {
		if u.Host == h {
			out = append(out, i)
		}
	}
	return out
}

// scriptLog is a target's output at its current attempt.
func (l *bkStepLogs) scriptLog(ctx context.Context, idx int) (string, error) {
	ref := schemas.LogRef{Job: l.id, Step: l.step, Host: idx, Attempt: l.st.Steps[l.step].Hosts.AttemptOf(idx)}
	page, err := l.s.core.Logs.Read(ctx, ref, 0, bkMaxScriptLogLines)
	if err != nil || len(page.Lines) == 0 {
		return "", err
	}
	return strings.Join(page.Lines, "\n") + "\n", nil
}

// records reads a file task's log (one schemas.FileLog per line) and keeps
// each file's latest record, in the order the files first appear.
func (l *bkStepLogs) records(ctx context.Context, ref schemas.LogRef) ([]schemas.FileLog, error) {
	type fileKey struct {
		mode     int
		src      schemas.Host
		sp, dest string
	}
	seen := map[fileKey]int{}
	var out []schemas.FileLog
	for from := 0; from < bkMaxFileLogLines; {
		page, err := l.s.core.Logs.Read(ctx, ref, from, bkLogReadPage)
		if err != nil {
			return nil, err
		}
		for _, line := range page.Lines {
			var fl schemas.FileLog
			if json.Unmarshal([]byte(line), &fl) != nil {
				continue
			}
			k := fileKey{fl.Mode, fl.SourceHost, fl.SourcePath, fl.DestPath}
			if i, ok := seen[k]; ok {
				out[i] = fl
			} else {
				seen[k] = len(out)
				out = append(out, fl)
			}
		}
		if page.To <= from || page.To >= page.Total {
			break
		}
		from = page.To
	}
	return out, nil
}

// downloads is a target's file records. A target without any (it has not
// started, or failed before a transfer began) gets one record per file
// it should receive: waiting, or failed with the host's error.
func (l *bkStepLogs) downloads(ctx context.Context, idx int) ([]schemas.FileLog, error) {
	ss := &l.st.Steps[l.step]
	recs, err := l.records(ctx, schemas.LogRef{Job: l.id, Step: l.step, Host: idx, Attempt: ss.Hosts.AttemptOf(idx)})
	if err != nil || len(recs) > 0 {
		return recs, err
	}
	status := ss.Hosts.Status[idx]
	if status == schemas.HostSuccess {
		return nil, nil
	}
	f, self := l.file(), l.spec.Steps[l.step].Targets[idx]
	note, at := "waiting for the file transfer to start", time.Now()
	if status.Final() {
		if l.rows == nil {
			if err := l.loadRows(ctx); err != nil {
				return nil, err
			}
		}
		r := l.rows[idx]
		note, at = "dest agent did not download: "+status.String(), r.EndedAt
		if r.Error != "" {
			note += ": " + r.Error
		}
	}
	rec := func(src schemas.Host, srcPath, name string, size int64) schemas.FileLog {
		fl := schemas.FileLog{Mode: schemas.FileModeDownload, SourceHost: src, SourcePath: srcPath, DestHost: self,
			DestPath: path.Join(f.Destination, name), Size: size, Status: schemas.FileWaiting, Content: bkStamp(at) + note}
		if status.Final() {
			fl.Status = schemas.FileFailed
		}
		return fl
	}
	if len(ss.Manifest) > 0 {
		for _, e := range ss.Manifest {
			recs = append(recs, rec(e.SourceHost, e.SourcePath, e.Name, e.Size))
		}
		return recs, nil
	}
	for _, src := range f.Sources {
		for _, h := range src.Hosts {
			for _, p := range src.Paths {
				recs = append(recs, rec(h, p, path.Base(p), 0))
			}
		}
	}
	return recs, nil
}

func (l *bkStepLogs) loadRows(ctx context.Context) error {
	rows, err := l.s.bkRows(ctx, l.spec, l.st)
	if err != nil {
		return err
	}
	l.rows = map[int]schemas.HostRow{}
	for _, r := range rows[l.step] {
		l.rows[r.Index] = r
	}
	return nil
}

// uploads is the file records of upload units; a unit without any gets
// one record per source path: waiting, or failed with its error.
func (l *bkStepLogs) uploads(ctx context.Context, units []int) ([]schemas.FileLog, error) {
	if len(units) == 0 {
		return nil, nil
	}
	ss := &l.st.Steps[l.step]
	all := l.file().UploadUnits()
	var results map[int]schemas.HostResult
	var out []schemas.FileLog
	for _, u := range units {
		if u >= len(ss.Uploads.Status) {
			continue
		}
		attempt := ss.Uploads.AttemptOf(u)
		recs, err := l.records(ctx, schemas.LogRef{Job: l.id, Step: l.step, Phase: schemas.PhaseUpload, Host: u, Attempt: attempt})
		if err != nil {
			return nil, err
		}
		status := ss.Uploads.Status[u]
		if len(recs) == 0 && status != schemas.HostSuccess {
			note, at := "waiting for the upload to start", time.Now()
			if status.Final() {
				if results == nil {
					if results, err = l.s.core.Jobs.UploadResults(ctx, l.id, l.step, len(all)); err != nil {
						return nil, err
					}
				}
				note = "source agent did not upload: " + status.String()
				if r, ok := results[u]; ok && r.Attempt == attempt {
					at = r.EndedAt
					if r.Error != "" {
						note += ": " + r.Error
					}
				}
			}
			for _, p := range l.file().Sources[all[u].Source].Paths {
				fl := schemas.FileLog{Mode: schemas.FileModeUpload, SourceHost: all[u].Host, SourcePath: p,
					Status: schemas.FileWaiting, Content: bkStamp(at) + note}
				if status.Final() {
					fl.Status = schemas.FileFailed
				}
				recs = append(recs, fl)
			}
		}
		out = append(out, recs...)
	}
	return out, nil
}

func bkStamp(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return "[" + t.Local().Format(time.DateTime) + "] "
}

// bkFileLogOf renders a record the way bk-job's file logs read.
func (l *bkStepLogs) bkFileLogOf(fl schemas.FileLog) bkFileLog {
	out := bkFileLog{Mode: fl.Mode, SrcIP: l.hosts.ref(fl.SourceHost), SrcPath: fl.SourcePath, Status: fl.Status,
		Size: bkSize(fl.Size), Speed: bkSpeed(fl.Speed), Process: fmt.Sprintf("%d%%", fl.Progress)}
	name, side, verb := fl.SourcePath, "source", "upload"
	if fl.Mode == schemas.FileModeDownload {
		d := l.hosts.ref(fl.DestHost)
		out.DestIP, out.DestPath = &d, fl.DestPath
		name, side, verb = fl.DestPath, "dest", "download"
	}
	state := map[int]string{
		schemas.FileWaiting:     side + " agent waiting to " + verb + " file",
		schemas.FileUploading:   side + " agent uploading file",
		schemas.FileDownloading: side + " agent downloading file",
		schemas.FileSuccess:     side + " agent success " + verb + " file",
		schemas.FileFailed:      side + " agent failed to " + verb + " file",
	}[fl.Status]
	stamp, detail := "", fl.Content
	if strings.HasPrefix(detail, "[") {
		if i := strings.Index(detail, "] "); i > 0 {
			stamp, detail = detail[:i+2], detail[i+2:]
		}
	}
	out.LogContent = fmt.Sprintf("%sFileName: %s FileSize: %s State: %s Speed: %s Progress: %s StatusDesc: %s Detail: %s",
		stamp, name, out.Size, state, out.Speed, out.Process, state, detail)
	return out
}

// bkSize renders a size as bk-job does: "9.0 Bytes", "1.5 KB", "3.0 MB".
func bkSize(n int64) string {
	units := []string{"Bytes", "KB", "MB", "GB", "TB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f, i = f/1024, i+1
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// bkSpeed renders bytes per second as whole KB/s.
func bkSpeed(bps int64) string { return fmt.Sprintf("%d KB/s", max(bps, 0)/1024) }

func (l *bkStepLogs) render(recs []schemas.FileLog) []bkFileLog {
	out := make([]bkFileLog, 0, len(recs))
	for _, r := range recs {
		out = append(out, l.bkFileLogOf(r))
	}
	return out
}

func hostNotInStep(h schemas.Host, l *bkStepLogs) error {
	return bkErrorf(bkCodeHostInvalid, schemas.ErrNotFound, "host %d:%s is not a host of step instance %d",
		h.CloudID, h.IP, BKStepInstanceID(l.id, l.step))
}

func (s *Surface) bkGetJobInstanceIPLog(c echo.Context) error {
	var req bkIPLogRequest
	if _, err := s.bkBind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context() // after authentication: it carries the principal
	var v bkInvalid
	sc := req.scope(&v)
	id := bkJobID(req.JobInstanceID, &v)
	bkStepIDParam(req.StepInstanceID, &v)
	var host schemas.Host
	if req.HostID.Set {
		if req.HostID.V < 1 {
			v.add("bk_host_id", "want a positive host id")
		}
	} else {
		if req.IP == "" {
			v.add("ip", "required (or bk_host_id)")
		} else if !req.CloudID.Set {
			v.add("bk_cloud_id", "required with ip")
		}
		host = schemas.Host{CloudID: req.CloudID.V, IP: strings.TrimSpace(req.IP)}
		if err := host.Validate(); err != nil && req.IP != "" {
			v.add("ip", "%v", err)
		}
	}
	if err := v.err(); err != nil {
		return err
	}
	l, err := s.bkOpenStep(ctx, sc, id, req.StepInstanceID)
	if err != nil {
		return err
	}
	if req.HostID.Set {
		h, ok := l.hosts.byID[req.HostID.V]
		if !ok {
			return bkErrorf(bkCodeHostInvalid, schemas.ErrNotFound, "no host has bk_host_id %d", req.HostID.V)
		}
		host = h
	}
	out := bkIPLogData{LogType: l.logType(), bkHostRef: l.hosts.ref(host)}
	idx := l.target(host)
	if out.LogType == bkLogScript {
		if idx < 0 {
			return hostNotInStep(host, l)
		}
		text, err := l.scriptLog(ctx, idx)
		if err != nil {
			return err
		}
		out.LogContent = &text
		return bkOK(c, "", out)
	}
	// A target's downloads and the uploads of the sources that feed it
	// (every source feeds every target); a source alone, its uploads.
	units := l.units(host)
	var recs []schemas.FileLog
	if idx >= 0 {
		if recs, err = l.downloads(ctx, idx); err != nil {
			return err
		}
		units = units[:0]
		for i := range l.file().UploadUnits() {
			units = append(units, i)
		}
	} else if len(units) == 0 {
		return hostNotInStep(host, l)
	}
	up, err := l.uploads(ctx, units)
	if err != nil {
		return err
	}
	logs := l.render(append(recs, up...))
	out.FileLogs = &logs
	return bkOK(c, "", out)
}

func (s *Surface) bkBatchGetJobInstanceIPLog(c echo.Context) error {
	var req bkBatchLogRequest
	if _, err := s.bkBind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context() // after authentication: it carries the principal
	var v bkInvalid
	sc := req.scope(&v)
	id := bkJobID(req.JobInstanceID, &v)
	bkStepIDParam(req.StepInstanceID, &v)
	switch {
	case len(req.HostIDList) == 0 && len(req.IPList) == 0:
		v.add("ip_list", "one of host_id_list and ip_list is required")
	case len(req.HostIDList) > bkMaxHostsPerLogSearch:
		v.add("host_id_list", "at most %d hosts", bkMaxHostsPerLogSearch)
	case len(req.IPList) > bkMaxHostsPerLogSearch:
		v.add("ip_list", "at most %d hosts", bkMaxHostsPerLogSearch)
	}
	var asked []schemas.Host
	if len(req.HostIDList) == 0 { // ip_list is ignored when host_id_list is given
		for i, ip := range req.IPList {
			if h, ok := bkHostOf(fmt.Sprintf("ip_list[%d]", i), ip, &v); ok {
				asked = append(asked, h)
			}
		}
	}
	for i, n := range req.HostIDList {
		if !n.Set || n.V < 1 {
			v.add(fmt.Sprintf("host_id_list[%d]", i), "want a positive host id")
		}
	}
	if err := v.err(); err != nil {
		return err
	}
	l, err := s.bkOpenStep(ctx, sc, id, req.StepInstanceID)
	if err != nil {
		return err
	}
	for _, n := range req.HostIDList {
		if h, ok := l.hosts.byID[n.V]; ok {
			asked = append(asked, h)
		}
	}
	out := bkBatchLogData{LogType: l.logType(), JobInstanceID: id, TaskInstanceID: id, StepInstanceID: BKStepInstanceID(id, l.step)}
	seen := map[schemas.Host]bool{}
	scripts, files := []bkScriptTaskLog{}, []bkFileTaskLog{}
	for _, h := range asked {
		if seen[h] {
			continue
		}
		seen[h] = true
		idx := l.target(h)
		if out.LogType == bkLogScript {
			if idx < 0 {
				continue // not a host of the step: no log, as bk-job
			}
			text, err := l.scriptLog(ctx, idx)
			if err != nil {
				return err
			}
			scripts = append(scripts, bkScriptTaskLog{bkHostRef: l.hosts.ref(h), LogContent: text})
			continue
		}
		// Each host's own file tasks: downloads as a target, uploads as a
		// source (a source's uploads only when it is asked for).
		units := l.units(h)
		if idx < 0 && len(units) == 0 {
			continue
		}
		var recs []schemas.FileLog
		if idx >= 0 {
			if recs, err = l.downloads(ctx, idx); err != nil {
				return err
			}
		}
		up, err := l.uploads(ctx, units)
		if err != nil {
			return err
		}
		files = append(files, bkFileTaskLog{bkHostRef: l.hosts.ref(h), FileLogs: l.render(append(recs, up...))})
	}
	if out.LogType == bkLogScript {
		out.ScriptTaskLogs = &scripts
	} else {
		out.FileTaskLogs = &files
	}
	return bkOK(c, "", out)
}
