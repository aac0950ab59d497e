// Package pull consumes durable JetStream consumers in batches with low
// latency: a batch is whatever has arrived by the time the handler is free.
package pull

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Batches pulls from cons and hands messages to handle in batches: the first
// message that arrives plus whatever else is already buffered, up to max.
// handle runs on the calling goroutine, one batch at a time. When ctx ends
// it stops pulling, naks every message it took and did not hand over,
// those still in the client's buffer included (so another worker takes
// them at once instead of after the ack wait), and returns nil once the
// subscription is closed. It returns an error only when it cannot start
// consuming.
func Batches(ctx context.Context, cons jetstream.Consumer, max int, handle func([]jetstream.Msg)) error {
	ch := make(chan jetstream.Msg, max)
	cc, err := cons.Consume(func(m jetstream.Msg) { ch <- m }, jetstream.PullMaxMessages(max))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			handBack(cc, ch, nil)
			return nil
		case m := <-ch:
			if ctx.Err() != nil { // both were ready: no batch after ctx ended
				handBack(cc, ch, []jetstream.Msg{m})
				return nil
			}
			batch := []jetstream.Msg{m}
		fill:
			for len(batch) < max {
				select {
				case m := <-ch:
					batch = append(batch, m)
				default:
					break fill
				}
			}
			handle(batch)
		}
	}
}

// handBack stops consuming and naks held, the buffer and what the client
// still had buffered, once the subscription is closed. Not before: the
// server redelivers a nakked message to a pull request still open, and one
// sent to this subscription as it closes is lost until the ack wait ends.
func handBack(cc jetstream.ConsumeContext, ch <-chan jetstream.Msg, held []jetstream.Msg) {
	cc.Drain() // unsubscribes, then delivers the client's buffer to the callback
	closed := cc.Closed()
	for {
		select {
		case m := <-ch:
			held = append(held, m)
		case <-closed: // the last callback has returned
			for len(ch) > 0 {
				held = append(held, <-ch)
			}
			for _, m := range held {
				_ = m.Nak()
			}
			return
		}
	}
}
