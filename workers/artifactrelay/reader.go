package artifactrelay

// This file holds a download's reader. Each read asks the relay for a
// batch of chunks after the last one received; the stream sends them
// straight to the reader's inbox, each with its sequence and how many of
// the object's chunks follow it, and ends the batch with a status message.
// The next read is asked for as soon as a batch has arrived, while the
// consumer still works through it; at most two batches wait unconsumed.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Headers of a batch direct get's messages.
const (
	hdrSequence   = "Nats-Sequence"
	hdrNumPending = "Nats-Num-Pending"
	hdrStatus     = "Status"
)

type reader struct {
	ctx   context.Context
	c     *Client
	info  *jetstream.ObjectInfo
	inbox string
	sub   *nats.Subscription
	ch    chan *nats.Msg // chunks, and nil for each batch's end

	mu        sync.Mutex
	gen       int    // the reply subject of the current read is inbox.<gen>
	lastSeq   uint64 // the stream sequence of the last chunk taken in order
	received  uint32 // chunks taken in order
	asked     int    // reads asked for (of the current count)
	ended     int    // reads whose end arrived
	consumed  int    // reads whose end the consumer reached
	askedAt   time.Time
	failed    error
	overflown bool

	buf    []byte
	read   uint32 // chunks handed to the consumer
	stalls int
}

func newReader(ctx context.Context, c *Client, info *jetstream.ObjectInfo) (*reader, error) {
	r := &reader{ctx: ctx, c: c, info: info, inbox: c.nc.NewInbox(), ch: make(chan *nats.Msg, 4*readBatch+8)}
	sub, err := c.nc.Subscribe(r.inbox+".*", r.onMsg)
	if err != nil {
		return nil, fmt.Errorf("artifact relay: %w", err)
	}
	r.sub = sub
	r.mu.Lock()
	r.ask()
	r.mu.Unlock()
	return r, nil
}

// ask asks for the next read when none is on its way and fewer than two
// wait unconsumed. Called with mu held.
func (r *reader) ask() {
	if r.failed != nil || r.received >= r.info.Chunks || r.asked > r.ended || r.asked-r.consumed >= 2 {
		return
	}
	req := r.c.req
	req.Op, req.Object, req.NUID, req.After, req.Batch = schemas.XferRead, r.info.Name, r.info.NUID, r.lastSeq, readBatch
	b, err := json.Marshal(req)
	if err == nil {
		err = r.c.nc.PublishRequest(r.c.subj, r.inbox+"."+strconv.Itoa(r.gen), b)
	}
	if err != nil {
		r.failed = fmt.Errorf("artifact relay: read %s: %w", r.info.Name, err)
		r.push(nil)
		return
	}
	r.asked++
	r.askedAt = time.Now()
}

// push hands m to the consumer; the channel holds more than two reads,
// so it fills only if the stream sends more than asked for.
func (r *reader) push(m *nats.Msg) {
	select {
	case r.ch <- m:
	default:
		r.overflown = true
	}
}

func (r *reader) onMsg(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Subject != r.inbox+"."+strconv.Itoa(r.gen) || r.failed != nil {
		return // an answer to a read given up on
	}
	if err := replyErr(m); err != nil {
		r.failed = err
		r.push(nil)
		return
	}
	switch status := m.Header.Get(hdrStatus); status {
	case "":
	case "204": // end of batch
		r.ended++
		r.push(nil)
		r.ask()
		return
	default: // 404: no chunk after the last (the object is gone or shorter)
		r.failed = fmt.Errorf("artifact relay: read %s after chunk %d of %d: status %s %s",
			r.info.Name, r.received, r.info.Chunks, status, m.Header.Get("Description"))
		r.push(nil)
		return
	}
	seq, err1 := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64)
	pending, err2 := strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
	if err1 != nil || err2 != nil || seq <= r.lastSeq {
		return
	}
	// Each chunk says how many of the object's follow it: one more or
	// fewer than expected is a chunk lost in between; the read is asked
	// again from the last chunk taken when the consumer sees it stall.
	if r.received >= r.info.Chunks || pending != uint64(r.info.Chunks-r.received-1) {
		return
	}
	r.lastSeq, r.received = seq, r.received+1
	r.push(m)
}

// Read hands out the object's bytes in order.
func (r *reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.read >= r.info.Chunks {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next takes the next message: a chunk into buf, or a read's end.
func (r *reader) next() error {
	t := time.NewTimer(requestWait)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case m := <-r.ch:
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := r.broken(); err != nil {
			return err
		}
		switch {
		case m == nil:
			r.consumed++
			r.ask()
		default:
			r.buf, r.read, r.stalls = m.Data, r.read+1, 0
		}
		return nil
	case <-t.C:
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := r.broken(); err != nil {
			return err
		}
		// The read, or its answer, was lost: ask again from the last chunk
		// taken, on a new reply subject so that what the lost read still
		// sends is dropped. What came of it is kept.
		if r.stalls++; r.stalls >= attempts {
			return fmt.Errorf("artifact relay: read %s stalled after chunk %d of %d", r.info.Name, r.received, r.info.Chunks)
		}
		r.gen++
		r.asked = r.ended
		r.ask()
		return nil
	}
}

// Close stops the reader.
func (r *reader) Close() error { return r.sub.Unsubscribe() }

// Info is the object's description.
func (r *reader) Info() (*jetstream.ObjectInfo, error) { return r.info, nil }

// Error is what stopped the reader, if anything did.
func (r *reader) Error() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// broken is why the read cannot go on, if it cannot; r.mu is held.
func (r *reader) broken() error {
	switch {
	case r.failed != nil:
		return r.failed
	case r.overflown:
		return fmt.Errorf("artifact relay: read %s: more chunks came than were asked for", r.info.Name)
	}
	return nil
}
