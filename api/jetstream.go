package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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
	ack, err := p.JS.PublishMsg(ctx, m)
	if err != nil {
		return 0, false, schemas.Unavailable(err, "publish %s", subject)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// KVClaims keeps claims in the names bucket, created only if absent.
type KVClaims struct{ KV jetstream.KeyValue }

// Claim records key → id unless key is already claimed; it returns the id
// that holds the claim.
func (k KVClaims) Claim(ctx context.Context, key string, id int64) (int64, error) {
	_, err := k.KV.Create(ctx, key, []byte(strconv.FormatInt(id, 10)))
	if errors.Is(err, jetstream.ErrKeyExists) {
		got, _, lerr := k.Lookup(ctx, key)
		return got, lerr
	}
	if err != nil {
		return 0, schemas.Unavailable(err, "claim %s", key)
	}
	return id, nil
}

// Lookup returns the id that holds a claim.
func (k KVClaims) Lookup(ctx context.Context, key string) (int64, bool, error) {
	e, err := k.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, schemas.Unavailable(err, "look up %s", key)
	}
	id, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("claim %s holds %q", key, e.Value())
	}
	return id, true, nil
}
