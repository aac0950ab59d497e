package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// maxDeadLetterData bounds the message body a dead letter keeps.
const maxDeadLetterData = 64 << 10

// deadLetter records a message that failed for good. A submit command that
// does leaves a failed job behind, with the reason, so its caller sees why;
// so does a sweeper's kick (the job cannot make progress: its deadlines
// would only kick it again).
func (w *Worker) deadLetter(ctx context.Context, m jetstream.Msg, cause error) error {
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("dead letter metadata: %w", err)
	}
	data := m.Data()
	if len(data) > maxDeadLetterData {
		data = data[:maxDeadLetterData]
	}
	dl := schemas.DeadLetter{
		Stream: meta.Stream, Seq: meta.Sequence.Stream, Subject: m.Subject(), Data: string(data),
		Deliveries: meta.NumDelivered, Reason: cause.Error(), JobID: jobOfMessage(m, meta), At: time.Now().UTC(),
	}
	b, _ := json.Marshal(dl)
	if _, err := w.dead.Put(ctx, fmt.Sprintf("%s.%d", dl.Stream, dl.Seq), b); err != nil {
		return fmt.Errorf("record dead letter: %w", err)
	}
	w.m.DeadLetters.WithLabelValues(dl.Stream).Inc()
	w.log.Error("message failed for good; recorded as a dead letter", "subject", dl.Subject, "seq", dl.Seq,
		"deliveries", dl.Deliveries, "job", dl.JobID, "err", cause)
	switch from, err := schemas.ParseResultSubject(m.Subject()); {
	case m.Subject() == schemas.SubjSubmit:
		unlock := w.locks.lock(dl.JobID)
		defer unlock()
		return w.failJob(ctx, dl.JobID, m.Data(), "the job could not be processed: "+cause.Error())
	case err == nil && from.Sweeper:
		unlock := w.locks.lock(dl.JobID)
		defer unlock()
		return w.failJob(ctx, dl.JobID, nil, "the job could not make progress: "+cause.Error())
	}
	return nil
}

func jobOfMessage(m jetstream.Msg, meta *jetstream.MsgMetadata) int64 {
	switch m.Subject() {
	case schemas.SubjSubmit:
		return int64(meta.Sequence.Stream)
	case schemas.SubjStop, schemas.SubjOp:
		var ref struct {
			JobID int64 `json:"job_id"`
		}
		_ = json.Unmarshal(m.Data(), &ref)
		return ref.JobID
	}
	if id, err := schemas.JobOfResultSubject(m.Subject()); err == nil {
		return id
	}
	return 0
}

// failJob ends a job as failed with a reason, creating it from its submit
// command when no worker managed to: its hosts that had not ended fail too.
func (w *Worker) failJob(ctx context.Context, id int64, submit []byte, reason string) error {
	spec, err := w.spec(ctx, id)
	if errors.Is(err, schemas.ErrNotFound) {
		var cmd schemas.SubmitCommand
		if json.Unmarshal(submit, &cmd) != nil {
			cmd.Spec = schemas.JobSpec{Name: "undecodable submission"}
		}
		spec = &cmd.Spec
		if spec.Name == "" {
			spec.Name = "job"
		}
		b, _ := json.Marshal(spec)
		if _, err := w.jobs.Create(ctx, schemas.KeyJobSpec(id), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("store spec of failed job %d: %w", id, err)
		}
	} else if err != nil {
		return err
	}
	for attempt := 0; attempt < 20; attempt++ {
		st, rev, err := w.loadState(ctx, id)
		now := time.Now().UTC()
		if errors.Is(err, schemas.ErrNotFound) {
			st = schemas.NewJobState(id, spec, now)
		} else if err != nil {
			return err
		}
		if schemas.JobFinal(st.Status) {
			return nil
		}
		t := newTxn(spec, st, now, w.dir)
		t.abort(reason)
		st.UpdatedAt = now
		if err := w.storeResults(ctx, spec, st, t.results); err != nil {
			return err
		}
		b, _ := json.Marshal(st)
		if rev == 0 {
			rev, err = w.jobs.Create(ctx, schemas.KeyJobState(id), b)
		} else {
			rev, err = w.jobs.Update(ctx, schemas.KeyJobState(id), b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fail job %d: %w", id, err)
		}
		if err := w.effects(ctx, spec, st, rev, t); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("fail job %d: state kept changing", id)
}
