package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// EventAuditor publishes audit records to the EVENTS stream without
// waiting for the ack on the request path; a failed publish is logged.
type EventAuditor struct {
	Events *events.Publisher
	Log    interface {
		Warn(msg string, args ...any)
	}
}

// NewEventAuditor publishes on js as source.
func NewEventAuditor(js jetstream.JetStream, source string, log interface{ Warn(string, ...any) }) EventAuditor {
	return EventAuditor{Events: events.NewPublisher(js, source), Log: log}
}

// Record implements Auditor.
func (a EventAuditor) Record(_ context.Context, rec AuditRecord) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	futs, err := a.Events.PublishAsync(events.Event{Kind: rec.Action, Subject: rec.Object, ID: hex.EncodeToString(b[:]),
		Time: rec.Time, Data: rec})
	if err != nil {
		a.Log.Warn("audit event not published", "action", rec.Action, "object", rec.Object, "actor", rec.Actor, "err", err)
		return
	}
	for _, f := range futs {
		go func() {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				a.Log.Warn("audit event not stored", "action", rec.Action, "object", rec.Object, "actor", rec.Actor, "err", err)
			}
		}()
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
