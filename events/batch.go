package events

// This file holds the batch encoding: the events of one commit of a job go
// out as one message instead of one message each, because every message
// on the EVENTS stream is a durable write and a one-host job's commits
// carry six events between them.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// BatchContentType is the content type of a batch message: the CloudEvents
// JSON batch format, an array of structured-mode events.
const BatchContentType = "application/cloudevents-batch+json"

// HeadlineHeader gives, on a batch message, the index of its headline
// event: the one its subject names and Decode returns. (An id alone would
// not do: job.created and job.started of a job share theirs.)
const HeadlineHeader = "Fleetjob-Headline"

// MaxBatch bounds the events in one batch message, so a commit that folds
// thousands of host results stays under the server's maximum payload
// (a host.finished event is ~400 bytes).
const MaxBatch = 256

// headlineRank orders kinds by how much a subscriber filtering by subject
// wants to see them: a batch's subject names its highest-ranked event, so
// job.finished subscribers see every finished job whatever else its commit
// carried.
var headlineRank = map[string]int{
	JobFinished: 9, JobStopping: 8, JobStarted: 7, JobCreated: 6,
	StepFinished: 5, StepWaiting: 4, StepOperated: 3, StepStarted: 2,
	HostFinished: 1, HostStarted: 0,
}

// headline is the index of the event a batch is named after: the
// highest-ranked one, the latest of equals.
func headline(evs []Event) int {
	h := 0
	for i, ev := range evs {
		if headlineRank[ev.Kind] >= headlineRank[evs[h].Kind] {
			h = i
		}
	}
	return h
}

// Batches turns the events of one commit into messages: one per run of
// consecutive events about the same subject, split every MaxBatch events.
// A run of one event is a binary-mode message like Encode's. A batch's
// subject is its headline event's (fleetjob.event.<kind>.<id>) and its
// message id a digest of its events' ids, so the same batch published
// twice is stored once.
func Batches(source string, evs []Event) ([]*nats.Msg, error) {
	return batchBy(source, evs, func(a, b Event) bool { return a.Subject == b.Subject })
}

// KindBatches is Batches for events about many subjects: one message per
// run of events of the same kind (the audit records of a burst of
// requests, say), named after its last event. A subscriber to one
// object's subject finds its event only in the batch that names it, so
// such events are for subscribers of the kind (fleetjob.event.<kind>.>).
func KindBatches(source string, evs []Event) ([]*nats.Msg, error) {
	return batchBy(source, evs, func(a, b Event) bool { return a.Kind == b.Kind })
}

func batchBy(source string, evs []Event, same func(a, b Event) bool) ([]*nats.Msg, error) {
	var out []*nats.Msg
	for len(evs) > 0 {
		n := 1
		for n < len(evs) && n < MaxBatch && same(evs[n], evs[0]) {
			n++
		}
		m, err := encodeBatch(source, evs[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, m)
		evs = evs[n:]
	}
	return out, nil
}

func encodeBatch(source string, evs []Event) (*nats.Msg, error) {
	if len(evs) == 1 {
		return Encode(source, evs[0])
	}
	h := headline(evs)
	body := make([]byte, 0, 512*len(evs))
	digest := sha256.New()
	for i, ev := range evs {
		if err := check(source, ev); err != nil {
			return nil, err
		}
		data, err := eventData(ev)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			body = append(body, '[')
		} else {
			body = append(body, ',')
		}
		body = appendStructured(body, source, ev, data)
		digest.Write([]byte(Key(ev.Kind, ev.ID) + "\n"))
	}
	body = append(body, ']')
	m := nats.NewMsg(Subject(evs[h].Kind, evs[h].Subject))
	m.Header.Set("content-type", BatchContentType)
	m.Header.Set(HeadlineHeader, strconv.Itoa(h))
	m.Header.Set(nats.MsgIdHdr, "batch-"+hex.EncodeToString(digest.Sum(nil)[:16]))
	setHints(m, evs[h])
	m.Data = body
	return m, nil
}

// appendStructured appends ev as a structured-mode CloudEvent in the JSON
// format, data being its JSON. It is written by hand, not by the
// CloudEvents SDK, because the SDK's encoder validates and compacts the
// data again on every pass (three per event in a batch: most of what a
// worker spent creating a one-host job); events_test checks that the SDK
// reads what it writes as the same events.
func appendStructured(b []byte, source string, ev Event, data []byte) []byte {
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendString(b, ev.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, source)
	b = append(b, `,"type":`...)
	b = appendString(b, TypePrefix+ev.Kind)
	if ev.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, ev.Subject)
	}
	b = append(b, `,"time":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":"application/json","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// structured is a structured-mode event as the JSON format spells it.
type structured struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Time        time.Time       `json:"time"`
	Data        json.RawMessage `json:"data"`
}

// DecodeAll reads every event of a message, batch or not, in order.
func DecodeAll(h nats.Header, data []byte) ([]Decoded, error) {
	if h.Get("content-type") != BatchContentType {
		d, err := Decode(h, data)
		if err != nil {
			return nil, err
		}
		return []Decoded{d}, nil
	}
	var raw []structured
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("event batch: %w", err)
	}
	out := make([]Decoded, 0, len(raw))
	for _, r := range raw {
		d, err := r.decoded()
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// decodeHeadline returns a batch's headline event, decoding only that one.
func decodeHeadline(h nats.Header, data []byte) (Decoded, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Decoded{}, fmt.Errorf("event batch: %w", err)
	}
	i, err := strconv.Atoi(h.Get(HeadlineHeader))
	if err != nil || i < 0 || i >= len(raw) {
		return Decoded{}, fmt.Errorf("event batch: no headline %q among its %d events", h.Get(HeadlineHeader), len(raw))
	}
	var r structured
	if err := json.Unmarshal(raw[i], &r); err != nil {
		return Decoded{}, fmt.Errorf("event batch: %w", err)
	}
	return r.decoded()
}

// decoded checks a structured-mode event and returns it.
func (r structured) decoded() (Decoded, error) {
	if r.SpecVersion != cloudevents.CloudEventsVersionV1 || r.ID == "" || r.Type == "" || r.Source == "" {
		return Decoded{}, fmt.Errorf("event batch: an element is not a CloudEvents 1.0 event")
	}
	return Decoded{ID: r.ID, Source: r.Source, Type: r.Type, Subject: r.Subject, Time: r.Time, Data: r.Data}, nil
}

// Key is how an event is told apart from every other: its kind and its id
// (job.created and job.started of a job share an id).
func Key(kind, id string) string { return kind + "-" + id }

// Published returns the keys (see Key) of the events about subject (a job
// id) that the EVENTS stream holds. A worker replaying a job's events
// after a crash publishes only the others: the stream's own deduplication
// cannot drop a replay, because a commit's events go out as one batch and
// a replay's batch has other events in it.
func Published(ctx context.Context, js jetstream.JetStream, subject string) (map[string]bool, error) {
	st, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	filter := schemas.SubjEventPrefix + "*.*." + subject
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", subject, err)
	}
	var want uint64
	for _, n := range info.State.Subjects {
		want += n
	}
	out := map[string]bool{}
	if want == 0 {
		return out, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", subject, err)
	}
	for got := uint64(0); got < want; {
		batch, err := cons.Fetch(int(min(want-got, 500)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("events of %s: %w", subject, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			all, err := DecodeAll(m.Headers(), m.Data())
			if err != nil {
				continue // not ours to judge: it is no event we would publish
			}
			for _, d := range all {
				out[Key(strings.TrimPrefix(d.Type, TypePrefix), d.ID)] = true
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("events of %s: %w", subject, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("events of %s: %d of %d read, then nothing", subject, got, want)
		}
		got += uint64(n)
	}
	return out, nil
}
