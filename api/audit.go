package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// Audit actions: every write through the API is one audit event on
// fleetjob.event.audit.<action>.<object>.
const (
	AuditSubmit           = events.AuditSubmit
	AuditStop             = events.AuditStop
	AuditOperate          = events.AuditOperate
	AuditCredentialCreate = events.AuditCredentialCreate
	AuditCredentialRevoke = events.AuditCredentialRevoke
	AuditEnrolmentCreate  = events.AuditEnrolmentCreate
	AuditAgentEnrol       = events.AuditAgentEnrol
	AuditAgentRevoke      = events.AuditAgentRevoke
	AuditAccountSet       = events.AuditAccountSet
	AuditAccountDelete    = events.AuditAccountDelete
)

// AuditRecord is the data of an audit event: who did what, where from,
// through which surface, on which object of which scope.
type AuditRecord struct {
	Action        string         `json:"action"`
	Object        string         `json:"object"`
	Actor         string         `json:"actor"`
	App           string         `json:"app,omitempty"`
	Role          Role           `json:"role"`
	Credential    string         `json:"credential,omitempty"`
	Kind          CredentialKind `json:"kind"`
	Scope         string         `json:"scope,omitempty"`
	Source        string         `json:"source"`
	Surface       string         `json:"surface"`
	CorrelationID string         `json:"correlation_id,omitempty"`
	Detail        map[string]any `json:"detail,omitempty"`
	Time          time.Time      `json:"time"`
}

// Auditor records audit events. Record must not block the request for
// long: publishers queue the event and report failures themselves.
type Auditor interface {
	Record(ctx context.Context, rec AuditRecord)
}

// EventAuditor publishes audit records to the EVENTS stream off the
// request path: Record queues the record (waiting, never dropping, when
// the queue is full) and Run publishes queued records in batches and
// awaits their acks; a record that cannot be stored is logged.
type EventAuditor struct {
	events *events.Publisher
	log    *slog.Logger
	queue  chan AuditRecord
}

// auditBatch bounds the records published before their acks are awaited.
const auditBatch = 256

// NewEventAuditor publishes on js as source; run it with Run.
func NewEventAuditor(js jetstream.JetStream, source string, log *slog.Logger) *EventAuditor {
	return &EventAuditor{events: events.NewPublisher(js, source), log: log.With("component", "audit"),
		queue: make(chan AuditRecord, 8192)}
}

// Record implements Auditor.
func (a *EventAuditor) Record(ctx context.Context, rec AuditRecord) {
	select {
	case a.queue <- rec:
	case <-ctx.Done():
		a.log.Warn("audit event not queued", "action", rec.Action, "object", rec.Object, "actor", rec.Actor, "err", ctx.Err())
	}
}

// Run publishes queued records until ctx ends, then those still queued
// (for at most five seconds).
func (a *EventAuditor) Run(ctx context.Context) error {
	for {
		select {
		case rec := <-a.queue:
			a.publish(ctx, rec)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			for {
				select {
				case rec := <-a.queue:
					a.publish(dctx, rec)
				default:
					return nil
				}
			}
		}
	}
}

// publish sends rec and whatever else is queued, up to auditBatch, and
// awaits their acks.
func (a *EventAuditor) publish(ctx context.Context, first AuditRecord) {
	batch := []AuditRecord{first}
	for len(batch) < auditBatch {
		select {
		case rec := <-a.queue:
			batch = append(batch, rec)
			continue
		default:
		}
		break
	}
	evs := make([]events.Event, 0, len(batch))
	for _, rec := range batch {
		var b [12]byte
		_, _ = rand.Read(b[:])
		evs = append(evs, events.Event{Kind: rec.Action, Subject: auditToken(rec.Object), ID: hex.EncodeToString(b[:]), Time: rec.Time, Data: rec})
	}
	// a burst's records are one message per action (a CloudEvents batch):
	// an audit record per submission would be a durable write per job
	futs, err := a.events.PublishKindBatches(evs...)
	if err == nil {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = events.Await(actx, futs)
		cancel()
	}
	if err != nil {
		a.log.Warn("audit events not stored", "events", len(batch), "first_action", first.Action, "first_object", first.Object, "err", err)
	}
}

// audit records a write by the caller of ctx (or p).
func (c *Core) audit(ctx context.Context, p *Principal, action, object string, sc *schemas.Scope, detail map[string]any) {
	if c.deps.Audit == nil {
		return
	}
	if p == nil {
		p, _ = PrincipalFrom(ctx)
	}
	if p == nil {
		p = &Principal{}
	}
	rec := AuditRecord{Action: action, Object: object, Actor: p.Actor, App: p.App, Role: p.Role, Credential: p.CredentialID,
		Kind: p.Kind, Source: p.Source, Surface: p.Surface, CorrelationID: p.CorrelationID, Detail: detail, Time: time.Now().UTC()}
	if sc != nil {
		rec.Scope = sc.String()
	}
	c.deps.Audit.Record(ctx, rec)
}

// Audit records a write a surface made outside the core's commands (an
// identity created or revoked).
func (c *Core) Audit(ctx context.Context, action, object string, detail map[string]any) {
	c.audit(ctx, nil, action, object, nil, detail)
}

// auditToken makes an object name one subject token: no dots, spaces or
// wildcards, never empty (an enrolment token may name no agent).
func auditToken(object string) string {
	if object == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', ' ', '*', '>', '\t', '\n', '\r':
			return '_'
		}
		return r
	}, object)
}
