// Package callback delivers BlueKing-style job callbacks: when a job with a
// callback URL ends, it POSTs {job_instance_id, status, step_instance_list}
// there. Success is an HTTP 200. A failed attempt is repeated once at once
// with a form-encoded body (BlueKing's compatibility rule), then again later
// with growing delays; every attempt is recorded beside the job in KV.
package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/outbound"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/pull"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Backoff is the wait before each further round of attempts; after the last
// round the callback is given up (and the record says so).
var Backoff = []time.Duration{2 * time.Second, 10 * time.Second, time.Minute, 5 * time.Minute}

// Payload is what a callback URL receives.
type Payload struct {
	JobInstanceID int64      `json:"job_instance_id"`
	Status        int        `json:"status"`
	Steps         []StepCode `json:"step_instance_list"`
}

// StepCode is one step's status in a Payload.
type StepCode struct {
	StepInstanceID int64 `json:"step_instance_id"`
	Status         int   `json:"status"`
}

// Codes number a job for its callback receiver: run status codes and
// step instance ids. The surface whose contract defines callbacks
// (BlueKing's) provides them.
type Codes struct {
	RunStatus      func(status string) int
	StepInstanceID func(job int64, step int) int64
}

// Sender delivers callbacks.
type Sender struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	cache    *statuscache.Cache
	codes    Codes
	client   *http.Client
	consumer jetstream.ConsumerConfig
	log      *slog.Logger
}

// New returns a sender whose requests go only where guard allows.
func New(js jetstream.JetStream, kv jetstream.KeyValue, cache *statuscache.Cache, codes Codes, guard *outbound.Guard, log *slog.Logger) *Sender {
	return &Sender{js: js, kv: kv, cache: cache, codes: codes, client: guard.Client(10 * time.Second),
		consumer: schemas.DefaultTopology().CallbackConsumer(), log: log.With("component", "callback")}
}

const (
	// inFlight bounds the callbacks delivered at once.
	inFlight = 64
	// roundTimeout bounds one round: loading the job, two attempts of at
	// most the client's timeout each, and the record.
	roundTimeout = 45 * time.Second
	// recordTimeout bounds writing a round's record, which is done even
	// when shutdown began during the round.
	recordTimeout = 5 * time.Second
)

// Run delivers callbacks of finished jobs until ctx ends, then waits for
// the deliveries in flight and returns: a round cut short by ctx is not
// recorded and is handed back at once to another sender; one that
// finished is recorded. At most inFlight deliveries run at once.
func (s *Sender) Run(ctx context.Context) error {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, schemas.StreamEvents, s.consumer)
	if err != nil {
		return fmt.Errorf("callback consumer: %w", err)
	}
	defer s.client.CloseIdleConnections()
	var g errgroup.Group
	g.SetLimit(inFlight)
	err = pull.Batches(ctx, cons, inFlight, func(msgs []jetstream.Msg) {
		for _, m := range msgs {
			if ctx.Err() != nil { // waited for a slot past shutdown
				_ = m.Nak()
				continue
			}
			g.Go(func() error { s.handle(ctx, m); return nil })
		}
	})
	_ = g.Wait() // handlers return no error
	return err
}

func (s *Sender) handle(ctx context.Context, m jetstream.Msg) {
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	if m.Headers().Get(events.HintCallback) == "0" {
		_ = m.Ack() // the job has no callback URL: nothing to decode
		return
	}
	var ev struct {
		ID       int64 `json:"id"`
		Callback *bool `json:"callback"`
	}
	d, err := events.Decode(m.Headers(), m.Data())
	if err != nil || json.Unmarshal(d.Data, &ev) != nil || ev.ID == 0 {
		_ = m.Term()
		return
	}
	if ev.Callback != nil && !*ev.Callback {
		_ = m.Ack() // the job has no callback URL: nothing to load
		return
	}
	round := 0
	if meta, err := m.Metadata(); err == nil {
		round = int(meta.NumDelivered) - 1
	}
	retry, err := s.deliver(ctx, ev.ID, d.ID, round)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		_ = m.Nak() // shutdown cut the round short: another sender takes it at once
	case err != nil:
		s.log.Warn("callback bookkeeping failed; will retry", "job", ev.ID, "err", err)
		_ = m.NakWithDelay(5 * time.Second)
	case retry > 0:
		_ = m.NakWithDelay(retry)
	default:
		_ = m.Ack()
	}
}

// deliver makes one round of attempts for a job (JSON, then form-encoded)
// and records them. It returns how long to wait before the next round, or
// 0 when done (delivered, given up, or nothing to call).
func (s *Sender) deliver(ctx context.Context, id int64, event string, round int) (time.Duration, error) {
	spec, st, _, err := s.cache.Load(ctx, id)
	if errors.Is(err, schemas.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if spec.CallbackURL == "" || !schemas.JobFinal(st.Status) {
		return 0, nil
	}
	rec := schemas.CallbackRecord{URL: spec.CallbackURL}
	e, err := s.kv.Get(ctx, schemas.KeyCallback(id))
	var rev uint64
	switch {
	case err == nil:
		rev = e.Revision()
		if json.Unmarshal(e.Value(), &rec) == nil && (rec.Delivered || rec.GaveUp) && rec.Event == event {
			return 0, nil // a redelivered event after the job's callback was settled
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, fmt.Errorf("callback record %d: %w", id, err)
	}
	p := Payload{JobInstanceID: id, Status: s.codes.RunStatus(st.Status)}
	for i, ss := range st.Steps {
		p.Steps = append(p.Steps, StepCode{StepInstanceID: s.codes.StepInstanceID(id, i), Status: s.codes.RunStatus(ss.Status)})
	}
	if rec.Event != event {
		rec.Attempts = nil
	}
	rec.Event, rec.URL, rec.Status, rec.Delivered, rec.GaveUp = event, spec.CallbackURL, p.Status, false, false
	refused := false
	for _, form := range []bool{false, true} {
		a, err := s.post(ctx, spec.CallbackURL, p, form)
		if a.HTTPStatus != http.StatusOK && errors.Is(ctx.Err(), context.Canceled) {
			return 0, fmt.Errorf("callback %d: %w", id, ctx.Err()) // not an attempt of the receiver's
		}
		rec.Attempts = append(rec.Attempts, a)
		if a.HTTPStatus == http.StatusOK {
			rec.Delivered = true
			break
		}
		if refused = errors.Is(err, outbound.ErrRefused); refused {
			break // the guard refuses the URL: no later round would differ
		}
	}
	wait := time.Duration(0)
	if !rec.Delivered {
		if round < len(Backoff) && !refused {
			wait = Backoff[round]
		} else {
			rec.GaveUp = true
		}
	}
	// the round happened: record it even when shutdown began meanwhile
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	b, _ := json.Marshal(rec)
	if rev == 0 {
		_, err = s.kv.Create(rctx, schemas.KeyCallback(id), b)
	} else {
		_, err = s.kv.Update(rctx, schemas.KeyCallback(id), b, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("record callback %d: %w", id, err)
	}
	s.log.Info("callback attempted", "job", id, "url", spec.CallbackURL, "delivered", rec.Delivered, "gave_up", rec.GaveUp)
	return wait, nil
}

// post makes one attempt. Its error (also in the attempt's record, as
// outbound.Describe words it) says whether the guard refused the URL.
func (s *Sender) post(ctx context.Context, target string, p Payload, form bool) (schemas.CallbackAttempt, error) {
	a := schemas.CallbackAttempt{At: time.Now().UTC(), ContentType: "application/json"}
	body, _ := json.Marshal(p)
	if form {
		steps, _ := json.Marshal(p.Steps)
		v := url.Values{}
		v.Set("job_instance_id", strconv.FormatInt(p.JobInstanceID, 10))
		v.Set("status", strconv.Itoa(p.Status))
		v.Set("step_instance_list", string(steps))
		body, a.ContentType = []byte(v.Encode()), "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		a.Error = "not a URL that can be posted to"
		return a, fmt.Errorf("%s: %w", a.Error, outbound.ErrRefused)
	}
	req.Header.Set("Content-Type", a.ContentType)
	start := time.Now()
	resp, err := s.client.Do(req)
	a.Millis = time.Since(start).Milliseconds()
	if err != nil {
		err = outbound.Describe(err)
		a.Error = err.Error()
		return a, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	a.HTTPStatus = resp.StatusCode
	return a, nil
}

// Get reads a job's callback record.
func Get(ctx context.Context, kv jetstream.KeyValue, id int64) (schemas.CallbackRecord, bool, error) {
	var rec schemas.CallbackRecord
	e, err := kv.Get(ctx, schemas.KeyCallback(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, schemas.Unavailable(err, "callback record %d", id)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, false, fmt.Errorf("callback record %d: %w", id, err)
	}
	return rec, true, nil
}
