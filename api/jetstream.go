package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// JetStreamPublisher publishes commands and waits for the stream's ack.
type JetStreamPublisher struct{ JS jetstream.JetStream }

// Publish implements Publisher.
func (p JetStreamPublisher) Publish(ctx context.Context, subject string, body []byte, msgID string) (uint64, bool, error) {
	m := nats.NewMsg(subject)
	m.Data = body
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	if nc := p.JS.Conn(); nc != nil && nc.MaxPayload() > 0 && int64(len(body)+512) > nc.MaxPayload() {
		return 0, false, tooLarge(len(body), nc.MaxPayload())
	}
	ack, err := p.JS.PublishMsg(ctx, m)
	if errors.Is(err, nats.ErrMaxPayload) {
		return 0, false, tooLarge(len(body), p.JS.Conn().MaxPayload())
	}
	if err != nil {
		return 0, false, schemas.Unavailable(err, "publish %s", subject)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// KVClaims keeps claims in the names bucket, created only if absent. A
// claim's value is the job id, then a space and the fingerprint if any.
type KVClaims struct{ KV jetstream.KeyValue }

// Claim implements Claims.
func (k KVClaims) Claim(ctx context.Context, key string, id int64, fingerprint string) (ClaimHolder, error) {
	v := strconv.FormatInt(id, 10)
	if fingerprint != "" {
		v += " " + fingerprint
	}
	_, err := k.KV.Create(ctx, key, []byte(v))
	if errors.Is(err, jetstream.ErrKeyExists) {
		h, _, lerr := k.Lookup(ctx, key)
		return h, lerr
	}
	if err != nil {
		return ClaimHolder{}, schemas.Unavailable(err, "claim %s", key)
	}
	return ClaimHolder{ID: id, Fingerprint: fingerprint}, nil
}

// Lookup implements Claims.
func (k KVClaims) Lookup(ctx context.Context, key string) (ClaimHolder, bool, error) {
	e, err := k.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ClaimHolder{}, false, nil
	}
	if err != nil {
		return ClaimHolder{}, false, schemas.Unavailable(err, "look up %s", key)
	}
	idText, fp, _ := strings.Cut(string(e.Value()), " ")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		return ClaimHolder{}, false, fmt.Errorf("claim %s holds %q", key, e.Value())
	}
	return ClaimHolder{ID: id, Fingerprint: fp}, true, nil
}

// KVDeadLetters reads the dead letters bucket.
type KVDeadLetters struct{ KV jetstream.KeyValue }

// DeadLetters implements DeadLetterReader: every dead letter, newest first.
func (k KVDeadLetters) DeadLetters(ctx context.Context) ([]schemas.DeadLetter, error) {
	lister, err := k.KV.ListKeys(ctx)
	if err != nil {
		return nil, schemas.Unavailable(err, "list dead letters")
	}
	var all []schemas.DeadLetter
	for key := range lister.Keys() {
		e, err := k.KV.Get(ctx, key)
		if err != nil {
			continue // removed since it was listed
		}
		var dl schemas.DeadLetter
		if json.Unmarshal(e.Value(), &dl) == nil {
			all = append(all, dl)
		}
	}
	slices.SortFunc(all, func(a, b schemas.DeadLetter) int { return b.At.Compare(a.At) })
	return all, nil
}

// tooLarge refuses a command the NATS servers would refuse: retrying it
// cannot help, so it is no 503.
func tooLarge(n int, limit int64) error {
	return fmt.Errorf("the request makes a %d-byte command, over the %d bytes the NATS servers accept (max_payload): %w", n, limit, ErrTooLarge)
}
