package artifactrelay

// This file holds upload sessions. An upload's chunks must reach the store
// in order, so one relay takes them all: the one that answered XferBegin
// subscribes to a subject of the session's own (XferSessionSubject, still
// carrying the agent's id) and feeds the chunks, in the order they come,
// to an object store Put through a pipe.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/filexfer"
)

// Upload session settings.
const (
	// ChunkSize is an upload chunk's largest data: the store's own chunk,
	// well under NATS's 1 MiB default payload with headers.
	ChunkSize = 128 << 10
	// Window is how many chunks an agent may send before they are taken.
	Window = 16
	// sessionIdle ends a session nothing was sent on for this long.
	sessionIdle = 30 * time.Second
	// keepFinal is how long an ended session still answers a resent end.
	keepFinal = 10 * time.Second
)

type putResult struct {
	info *jetstream.ObjectInfo
	err  error
}

// session is one upload in progress.
type session struct {
	r      *Relay
	id     string
	agent  string
	object string
	sub    *nats.Subscription
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan putResult
	idle   *time.Timer

	mu    sync.Mutex
	next  uint64 // the index of the chunk to take next
	final []byte // the answer to the end, once stored
	ended bool
}

// begin opens an upload session for who: the object's name was checked
// against the unit's prefix; of its metadata only what filexfer sets is
// kept.
func (r *Relay) begin(ctx context.Context, m *nats.Msg, who asker, req *schemas.XferRequest, _ *grant) {
	meta := jetstream.ObjectMeta{Name: req.Object, Metadata: map[string]string{}}
	for _, k := range []string{filexfer.MetaMode, filexfer.MetaSource} {
		if v, ok := req.Meta[k]; ok && len(v) <= 4096 {
			meta.Metadata[k] = v
		}
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pr, pw := io.Pipe()
	s := &session{r: r, id: nuid.Next(), agent: who.agent, object: req.Object, pw: pw, cancel: cancel,
		done: make(chan putResult, 1)}
	sub, err := r.nc.Subscribe(schemas.XferSessionSubject(who.pool, who.agent, s.id), s.onChunk)
	if err == nil {
		// the agent's window, and then some, is all it may have queued
		err = sub.SetPendingLimits(4*Window, 4*Window*(ChunkSize+4096))
	}
	if err == nil {
		// the subscription is in place before the agent learns its subject
		err = r.nc.FlushTimeout(5 * time.Second)
	}
	if err != nil {
		cancel()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		r.fail(m, fmt.Errorf("open upload session: %w", err))
		return
	}
	s.sub = sub
	r.mu.Lock()
	r.sessions[s.id] = s
	r.mu.Unlock()
	s.idle = time.AfterFunc(sessionIdle, func() { s.abort(errors.New("upload session idle")) })
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		info, err := r.obs.Put(pctx, meta, pr)
		_ = pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		s.done <- putResult{info, err}
	}()
	b, _ := json.Marshal(schemas.XferSession{Session: s.id, ChunkSize: ChunkSize, Window: Window})
	_ = m.Respond(b)
}

// onChunk takes the next chunk, answers a resent one with what has been
// taken, and ignores one past a gap (the agent resends from the gap).
func (s *session) onChunk(m *nats.Msg) {
	if m.Reply == "" || len(m.Reply) <= len(agentInbox(s.agent)) || m.Reply[:len(agentInbox(s.agent))] != agentInbox(s.agent) {
		return
	}
	idx, err := strconv.ParseUint(m.Header.Get(schemas.XferChunkHeader), 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final != nil {
		_ = m.Respond(s.final)
		return
	}
	if s.ended {
		return
	}
	s.idle.Reset(sessionIdle)
	switch {
	case idx < s.next:
		_ = m.Respond([]byte(strconv.FormatUint(s.next, 10)))
		return
	case idx > s.next:
		return
	}
	if end := m.Header.Get(schemas.XferEndHeader); end != "" {
		s.end(m, end)
		return
	}
	if len(m.Data) > ChunkSize {
		s.abortLocked(fmt.Errorf("chunk of %d bytes, more than %d", len(m.Data), ChunkSize))
		respondErr(m, schemas.XferErrFailed, "chunk too large")
		return
	}
	if _, err := s.pw.Write(m.Data); err != nil {
		s.abortLocked(err)
		respondErr(m, schemas.XferErrFailed, fmt.Sprintf("store: %v", err))
		return
	}
	s.next++
	_ = m.Respond([]byte(strconv.FormatUint(s.next, 10)))
}

// end closes the object, waits for it to be stored and answers with it.
func (s *session) end(m *nats.Msg, size string) {
	_ = s.pw.Close()
	res := <-s.done
	s.ended = true
	s.idle.Stop()
	switch {
	case res.err != nil:
		respondErr(m, schemas.XferErrFailed, fmt.Sprintf("store %s: %v", s.object, res.err))
	case strconv.FormatUint(res.info.Size, 10) != size:
		respondErr(m, schemas.XferErrFailed, fmt.Sprintf("stored %d bytes, the agent sent %s", res.info.Size, size))
	default:
		s.final, _ = json.Marshal(schemas.XferObject{Object: res.info.Name, NUID: res.info.NUID, Size: res.info.Size,
			Chunks: res.info.Chunks, Digest: res.info.Digest, Meta: res.info.Metadata})
		_ = m.Respond(s.final)
	}
	time.AfterFunc(keepFinal, s.close)
}

// abort ends a session that will not complete: the Put fails and removes
// the chunks it stored.
func (s *session) abort(err error) {
	// first, unblock a chunk stuck writing into a Put that does not read
	_ = s.pw.CloseWithError(err)
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortLocked(err)
}

func (s *session) abortLocked(err error) {
	if s.ended {
		return
	}
	s.ended = true
	s.idle.Stop()
	_ = s.pw.CloseWithError(err)
	s.cancel()
	s.r.log.Warn("upload session ended", "session", s.id, "agent", s.agent, "object", s.object, "err", err)
	go s.close()
}

// close drops the session's subscription and its place in the relay.
func (s *session) close() {
	_ = s.sub.Unsubscribe()
	s.cancel()
	s.r.mu.Lock()
	delete(s.r.sessions, s.id)
	s.r.mu.Unlock()
}
