package orchestrator

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// consume pulls from cons and hands messages to handle in batches: the first
// message that arrives plus whatever else is already buffered, up to max.
// When ctx ends it stops pulling, naks what it buffered (so another worker
// takes it at once) and returns.
func consume(ctx context.Context, cons jetstream.Consumer, max int, handle func([]jetstream.Msg)) error {
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

// keyedMutex serialises work per job id inside one process.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[int64]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(id int64) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[int64]*keyedEntry{}
	}
	e := k.locks[id]
	if e == nil {
		e = &keyedEntry{}
		k.locks[id] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, id)
		}
		k.mu.Unlock()
	}
}
