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
// When ctx ends it stops pulling, naks what it buffered (so another worker
// takes it at once) and returns.
func Batches(ctx context.Context, cons jetstream.Consumer, max int, handle func([]jetstream.Msg)) error {
	ch := make(chan jetstream.Msg, max)
	cc, err := cons.Consume(func(m jetstream.Msg) { ch <- m }, jetstream.PullMaxMessages(max))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			cc.Stop()
			for {
				select {
				case m := <-ch:
					_ = m.Nak()
				case <-cc.Closed():
					for len(ch) > 0 {
						_ = (<-ch).Nak()
					}
					return nil
				}
			}
		case m := <-ch:
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
