// Package events is fleetjob's event catalogue and its CloudEvents 1.0
// encoding on NATS: every state change of jobs, steps, hosts and agents is
// published on fleetjob.event.<kind>.<id>. A lone event travels in binary
// mode (ce-* headers, the data as the body); the events of one commit of a
// job travel as one message, a CloudEvents JSON batch, on the subject of
// the commit's headline event (see Batch).
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/pubflow"
	"github.com/fleetjob/fleetjob/schemas"
)

// Kinds of event. The CloudEvents type is "io.fleetjob." + kind.
const (
	JobCreated   = "job.created"
	JobStarted   = "job.started"
	JobStopping  = "job.stopping"
	JobFinished  = "job.finished"
	StepStarted  = "step.started"
	StepFinished = "step.finished"
	StepWaiting  = "step.waiting"  // a rolling step waits for a person
	StepOperated = "step.operated" // confirm, skip, retry, ignore error
	HostStarted  = "host.started"
	HostFinished = "host.finished"
	AgentOnline  = "agent.online"
	AgentOffline = "agent.offline"
	// Audit events: one per write through the API, with its actor, scope,
	// source address, surface and correlation id.
	AuditSubmit           = "audit.submit"
	AuditStop             = "audit.stop"
	AuditOperate          = "audit.operate"
	AuditCredentialCreate = "audit.credential_create"
	AuditCredentialRevoke = "audit.credential_revoke"
	AuditEnrolmentCreate  = "audit.enrolment_create"
	AuditAgentEnrol       = "audit.agent_enrol"
	AuditAgentRevoke      = "audit.agent_revoke"
	AuditAccountSet       = "audit.account_set"
	AuditAccountDelete    = "audit.account_delete"
)

// TypePrefix prefixes every CloudEvents type.
const TypePrefix = "io.fleetjob."

// Subject returns the NATS subject of an event.
func Subject(kind, id string) string { return schemas.SubjEventPrefix + kind + "." + id }

// Event is one state change before encoding.
type Event struct {
	Kind string
	// Subject is what the event is about, e.g. a job id; it ends the NATS subject.
	Subject string
	// ID is unique per change and stable across retries, so a republished
	// event is deduplicated.
	ID   string
	Time time.Time
	Data any
	// Hints are NATS headers set on the event's message when it is alone
	// in it or its headline (see Batches): what a consumer filtering by
	// subject may check before decoding the message (HintCallback). They
	// are not part of the CloudEvent.
	Hints map[string]string
}

// HintCallback is the hint a job.finished event carries: "0" when its job
// has no callback URL, so the callback sender acks the message without
// decoding it (every job's job.finished reaches it), "1" otherwise.
const HintCallback = "Fleetjob-Callback"

// setHints copies an event's hints onto its message.
func setHints(m *nats.Msg, ev Event) {
	for k, v := range ev.Hints {
		m.Header.Set(k, v)
	}
}

// check validates what the CloudEvents 1.0 specification requires of an
// event's attributes (its encoders below write the rest themselves).
func check(source string, ev Event) error {
	switch {
	case ev.ID == "":
		return fmt.Errorf("invalid event %s: no id", ev.Kind)
	case source == "":
		return fmt.Errorf("invalid event %s: no source", ev.Kind)
	case ev.Kind == "":
		return fmt.Errorf("invalid event %s: no type", ev.ID)
	}
	return nil
}

// eventData is an event's data as JSON: what a CloudEvent with
// datacontenttype application/json carries.
func eventData(ev Event) ([]byte, error) {
	b, err := json.Marshal(ev.Data)
	if err != nil {
		return nil, fmt.Errorf("event %s data: %w", ev.Kind, err)
	}
	return b, nil
}

// Encode turns an event into a NATS message with CloudEvents binary-mode
// headers (ce-*) and a JSON body.
func Encode(source string, ev Event) (*nats.Msg, error) {
	if err := check(source, ev); err != nil {
		return nil, err
	}
	data, err := eventData(ev)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(Subject(ev.Kind, ev.Subject))
	m.Header.Set("ce-specversion", cloudevents.CloudEventsVersionV1)
	m.Header.Set("ce-id", ev.ID)
	m.Header.Set("ce-source", source)
	m.Header.Set("ce-type", TypePrefix+ev.Kind)
	if ev.Subject != "" {
		m.Header.Set("ce-subject", ev.Subject)
	}
	m.Header.Set("ce-time", ev.Time.UTC().Format(time.RFC3339Nano))
	m.Header.Set("content-type", cloudevents.ApplicationJSON)
	m.Header.Set(nats.MsgIdHdr, Key(ev.Kind, ev.ID))
	setHints(m, ev)
	m.Data = data
	return m, nil
}

// Decoded is an event read back from a message.
type Decoded struct {
	ID, Source, Type, Subject string
	Time                      time.Time
	Data                      json.RawMessage
}

// Decode reads the CloudEvents attributes back from a message's headers;
// of a batch, it returns the headline event (the one the subject names).
func Decode(h nats.Header, data []byte) (Decoded, error) {
	if h.Get("content-type") == BatchContentType {
		return decodeHeadline(h, data)
	}
	d := Decoded{
		ID: h.Get("ce-id"), Source: h.Get("ce-source"),
		Type: h.Get("ce-type"), Subject: h.Get("ce-subject"),
		Data: data,
	}
	if h.Get("ce-specversion") != "1.0" || d.ID == "" || d.Type == "" || d.Source == "" {
		return d, fmt.Errorf("not a CloudEvents 1.0 binary-mode message")
	}
	t, err := time.Parse(time.RFC3339Nano, h.Get("ce-time"))
	if err != nil {
		return d, fmt.Errorf("ce-time: %w", err)
	}
	d.Time = t
	return d, nil
}

// Publisher publishes events to the EVENTS stream.
type Publisher struct {
	js     jetstream.JetStream
	source string
}

// NewPublisher returns a publisher stamping events with source (a URI
// reference naming the process, e.g. "fleetjob/worker/host-1").
func NewPublisher(js jetstream.JetStream, source string) *Publisher {
	return &Publisher{js: js, source: source}
}

// PublishAsync queues the events and returns their ack futures.
func (p *Publisher) PublishAsync(evs ...Event) ([]jetstream.PubAckFuture, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		m, err := Encode(p.source, ev)
		if err != nil {
			return futs, err
		}
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			return futs, fmt.Errorf("publish event %s: %w", ev.Kind, err)
		}
		futs = append(futs, f)
	}
	return futs, nil
}

// PublishKindBatches publishes events about many subjects as KindBatches.
func (p *Publisher) PublishKindBatches(evs ...Event) ([]jetstream.PubAckFuture, error) {
	msgs, err := KindBatches(p.source, evs)
	if err != nil {
		return nil, err
	}
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			return futs, fmt.Errorf("publish events %s: %w", m.Subject, err)
		}
		futs = append(futs, f)
	}
	return futs, nil
}

// Queue publishes the events of one commit, in batches (see Batches),
// through win (flow-controlled); the caller waits for their acks with
// win.Wait.
func (p *Publisher) Queue(ctx context.Context, win *pubflow.Window, evs ...Event) error {
	msgs, err := Batches(p.source, evs)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := win.Publish(ctx, m); err != nil {
			return fmt.Errorf("publish events %s: %w", m.Subject, err)
		}
	}
	return nil
}

// Publish sends the events and waits for their acks.
func (p *Publisher) Publish(ctx context.Context, evs ...Event) error {
	futs, err := p.PublishAsync(evs...)
	if err != nil {
		return err
	}
	return Await(ctx, futs)
}

// Await waits for every future's ack.
func Await(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
