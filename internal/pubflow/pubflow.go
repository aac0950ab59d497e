// Package pubflow publishes to JetStream asynchronously with flow control:
// a publisher never has more of its messages unacknowledged than its
// window, and when the connection's own limit of outstanding async
// publishes is reached (other publishers share it) it waits for acks
// instead of failing. A commit that writes thousands of keys or events
// then never fails with nats.go's "stalled with too many outstanding
// async published messages", and never has its whole batch redone.
package pubflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultSize is the window a worker's commits publish with: large enough
// to keep the server busy, far under nats.go's default limit of 4,000
// outstanding publishes per connection, which several windows share.
const DefaultSize = 256

// stallPause is how long Publish waits before trying again when the
// connection's limit is reached and none of the outstanding messages are
// its own.
const stallPause = 5 * time.Millisecond

// Window is one batch of publishes. It is not safe for concurrent use:
// each commit has its own.
type Window struct {
	js   jetstream.JetStream
	size int
	opts []jetstream.PublishOpt
	futs []jetstream.PubAckFuture // unacknowledged, oldest first
}

// New returns a window of size (DefaultSize when size < 1) over js; opts
// apply to every publish.
func New(js jetstream.JetStream, size int, opts ...jetstream.PublishOpt) *Window {
	if size < 1 {
		size = DefaultSize
	}
	return &Window{js: js, size: size, opts: opts}
}

// Publish queues m, first waiting for the oldest of the window's acks
// when the window is full.
func (w *Window) Publish(ctx context.Context, m *nats.Msg) error {
	if len(w.futs) >= w.size {
		if err := w.awaitOldest(ctx); err != nil {
			return err
		}
	}
	for {
		f, err := w.js.PublishMsgAsync(m, w.opts...)
		if err == nil {
			w.futs = append(w.futs, f)
			return nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		// the connection is at its limit: wait for one of ours, or, with
		// none outstanding, for the others' to drain a little
		if len(w.futs) > 0 {
			if err := w.awaitOldest(ctx); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(stallPause):
		}
	}
}

// PublishData queues a message of data on subject.
func (w *Window) PublishData(ctx context.Context, subject string, data []byte) error {
	return w.Publish(ctx, &nats.Msg{Subject: subject, Data: data})
}

// Wait waits for every outstanding ack; the first failure is returned.
func (w *Window) Wait(ctx context.Context) error {
	for len(w.futs) > 0 {
		if err := w.awaitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (w *Window) awaitOldest(ctx context.Context) error {
	f := w.futs[0]
	w.futs = w.futs[1:]
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}
