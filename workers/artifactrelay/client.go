package artifactrelay

// This file holds the agent's side: a filexfer.Objects bound to one file
// task, which asks the relay on the agent's own transfer subjects.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// ErrRefused marks a request the relay refused: the object is not this
// task's to read or write.
var ErrRefused = errors.New("refused by the artifact relay")

// Client settings.
const (
	// requestWait is how long one request waits for its answer before it
	// is sent again; a read's chunks count as its answer.
	requestWait = 5 * time.Second
	// attempts bounds how often a request, or a stalled read or upload
	// window, is sent again.
	attempts = 5
	// readBatch is how many chunks one read asks for; two reads' worth
	// may be buffered ahead of the consumer.
	readBatch = 32
)

// Client is an agent's access to the artifacts of one file task.
type Client struct {
	nc          *nats.Conn
	pool, agent string
	req         schemas.XferRequest
	subj        string
	put         bool
}

// Downloads is the client of a download task: it reads the objects the
// job's step sends to agent's host.
func Downloads(nc *nats.Conn, pool, agent string, job int64, step int) *Client {
	return &Client{nc: nc, pool: pool, agent: agent, subj: schemas.XferGetSubject(pool, agent),
		req: schemas.XferRequest{V: schemas.MessageVersion, JobID: job, Step: step}}
}

// Uploads is the client of an upload task: it stores objects under the
// prefix of the step's upload unit, and looks up only those.
func Uploads(nc *nats.Conn, pool, agent string, job int64, step, unit int) *Client {
	return &Client{nc: nc, pool: pool, agent: agent, subj: schemas.XferPutSubject(pool, agent), put: true,
		req: schemas.XferRequest{V: schemas.MessageVersion, JobID: job, Step: step, Unit: unit}}
}

// request sends r and returns the answer, asking again when none comes
// (the relay, or its answer, may be lost) until ctx ends.
func (c *Client) request(ctx context.Context, r schemas.XferRequest) (*nats.Msg, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var last error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(i) * 200 * time.Millisecond):
			}
		}
		rctx, cancel := context.WithTimeout(ctx, requestWait)
		m, err := c.nc.RequestWithContext(rctx, c.subj, b)
		cancel()
		if err == nil {
			return m, replyErr(m)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		last = err
	}
	return nil, fmt.Errorf("artifact relay: %s of %s: %w", r.Op, r.Object, last)
}

// replyErr is the error an answer carries, if any.
func replyErr(m *nats.Msg) error {
	code := m.Header.Get(schemas.XferErrorHeader)
	switch code {
	case "":
		return nil
	case schemas.XferErrNotFound:
		return fmt.Errorf("artifact relay: %s: %w", m.Data, jetstream.ErrObjectNotFound)
	case schemas.XferErrRefused:
		return fmt.Errorf("%w: %s", ErrRefused, m.Data)
	}
	return fmt.Errorf("artifact relay: %s", m.Data)
}

// GetInfo describes an object of the task.
func (c *Client) GetInfo(ctx context.Context, name string, _ ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	r := c.req
	r.Op, r.Object = schemas.XferInfo, name
	m, err := c.request(ctx, r)
	if err != nil {
		return nil, err
	}
	var o schemas.XferObject
	if err := json.Unmarshal(m.Data, &o); err != nil {
		return nil, fmt.Errorf("artifact relay: info of %s: %w", name, err)
	}
	return objectInfo(o), nil
}

func objectInfo(o schemas.XferObject) *jetstream.ObjectInfo {
	return &jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: o.Object, Metadata: o.Meta},
		Bucket: schemas.BucketArtifacts, NUID: o.NUID, Size: o.Size, Chunks: o.Chunks, Digest: o.Digest}
}

// Get streams an object of a download task.
func (c *Client) Get(ctx context.Context, name string, _ ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	if c.put {
		return nil, fmt.Errorf("artifact relay: an upload task reads no object: %w", ErrRefused)
	}
	info, err := c.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	return newReader(ctx, c, info)
}

// Put stores src under meta.Name for an upload task, Window chunks of
// ChunkSize in flight, sending again from the first one not taken when
// the relay's answers stop.
func (c *Client) Put(ctx context.Context, meta jetstream.ObjectMeta, src io.Reader) (*jetstream.ObjectInfo, error) {
	if !c.put {
		return nil, fmt.Errorf("artifact relay: a download task stores no object: %w", ErrRefused)
	}
	r := c.req
	r.Op, r.Object, r.Meta = schemas.XferBegin, meta.Name, meta.Metadata
	m, err := c.request(ctx, r)
	if err != nil {
		return nil, err
	}
	var sess schemas.XferSession
	if err := json.Unmarshal(m.Data, &sess); err != nil || sess.Session == "" || sess.ChunkSize <= 0 || sess.Window <= 0 {
		return nil, fmt.Errorf("artifact relay: begin %s: bad answer %q", meta.Name, m.Data)
	}
	inbox := c.nc.NewInbox()
	acks := make(chan *nats.Msg, 4*sess.Window+8)
	sub, err := c.nc.ChanSubscribe(inbox+".*", acks)
	if err != nil {
		return nil, fmt.Errorf("artifact relay: %w", err)
	}
	defer sub.Unsubscribe()
	u := &upload{nc: c.nc, subj: schemas.XferSessionSubject(c.pool, c.agent, sess.Session), inbox: inbox, acks: acks, sess: sess}
	return u.run(ctx, src)
}

// upload is one Put's window of chunks.
type upload struct {
	nc          *nats.Conn
	subj, inbox string
	acks        chan *nats.Msg
	sess        schemas.XferSession
	unacked     [][]byte // chunks base, base+1, … not yet taken
	base        uint64
	total       uint64
	free        [][]byte
}

func (u *upload) send(idx uint64, data []byte, end bool) error {
	m := nats.NewMsg(u.subj)
	// a reply subject per chunk: the relay may answer each request once
	m.Reply = u.inbox + "." + strconv.FormatUint(idx, 10)
	m.Header.Set(schemas.XferChunkHeader, strconv.FormatUint(idx, 10))
	if end {
		m.Header.Set(schemas.XferEndHeader, strconv.FormatUint(u.total, 10))
	}
	m.Data = data
	return u.nc.PublishMsg(m)
}

func (u *upload) run(ctx context.Context, src io.Reader) (*jetstream.ObjectInfo, error) {
	eof, stalls := false, 0
	for {
		for !eof && len(u.unacked) < u.sess.Window {
			buf := u.buffer()
			n, err := io.ReadFull(src, buf)
			if n > 0 {
				u.unacked = append(u.unacked, buf[:n])
				u.total += uint64(n)
				if err := u.send(u.base+uint64(len(u.unacked)-1), buf[:n], false); err != nil {
					return nil, fmt.Errorf("artifact relay: send chunk: %w", err)
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				eof = true
			} else if err != nil {
				return nil, err
			}
		}
		end := eof && len(u.unacked) == 0
		if end {
			if err := u.send(u.base, nil, true); err != nil {
				return nil, fmt.Errorf("artifact relay: send end: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case m := <-u.acks:
			if err := replyErr(m); err != nil {
				return nil, err
			}
			if len(m.Data) > 0 && m.Data[0] == '{' {
				var o schemas.XferObject
				if err := json.Unmarshal(m.Data, &o); err != nil {
					return nil, fmt.Errorf("artifact relay: end: %w", err)
				}
				return objectInfo(o), nil
			}
			taken, err := strconv.ParseUint(string(m.Data), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("artifact relay: bad answer %q", m.Data)
			}
			for taken > u.base && len(u.unacked) > 0 {
				u.free = append(u.free, u.unacked[0][:cap(u.unacked[0])])
				u.unacked, u.base = u.unacked[1:], u.base+1
				stalls = 0
			}
		case <-time.After(requestWait):
			// answers stopped: a chunk or its answer was lost; the relay
			// takes chunks in order only, so send again from the first
			// one not taken (the end is sent again by the next turn)
			if stalls++; stalls >= attempts {
				return nil, fmt.Errorf("artifact relay: upload stalled at chunk %d", u.base)
			}
			for i, b := range u.unacked {
				if err := u.send(u.base+uint64(i), b, false); err != nil {
					return nil, fmt.Errorf("artifact relay: send chunk: %w", err)
				}
			}
		}
	}
}

func (u *upload) buffer() []byte {
	if n := len(u.free); n > 0 {
		b := u.free[n-1]
		u.free = u.free[:n-1]
		return b
	}
	return make([]byte, u.sess.ChunkSize)
}
