package agent

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Chunking limits of a log stream.
const (
	chunkLines   = 2048
	chunkBytes   = 64 << 10
	chunkEvery   = 200 * time.Millisecond
	maxLineBytes = 64 << 10
)

// logStream cuts an execution's output into chunks, each one LOGS message
// with its first line index and line count in headers, published
// asynchronously and deduplicated by execution and first line.
type logStream struct {
	js      jetstream.JetStream
	subject string
	exec    string

	mu    sync.Mutex
	buf   []byte // the chunk being filled: its lines joined by '\n'
	n     int    // lines in buf
	first int    // index of buf's first line
	skip  int    // lines already stored (a restarted agent resuming a log)
	// sent are the chunks not known to be stored yet, in order; a nil
	// future is a chunk the client refused to send at once.
	sent []sentChunk
	// published says a chunk of this log has been sent (or, resuming,
	// that the stream holds some): the log can no longer ride in a report.
	published bool
	timer     *time.Timer
	closed    bool
	onBytes   func(int)
	// mask replaces sensitive parameter values in every line.
	mask *strings.Replacer
	// attempt bounds each resend's wait for its ack.
	attempt time.Duration
}

// newLogStream streams t's output on subject (its agent's log subject of t).
func newLogStream(js jetstream.JetStream, subject string, t *schemas.Task, onBytes func(int)) *logStream {
	l := &logStream{
		js: js, subject: subject,
		exec: t.ExecID, onBytes: onBytes, attempt: schemas.PublishAsyncTimeout,
	}
	if sc := t.Script; sc != nil && sc.Sensitive {
		var pairs []string
		for _, v := range sc.Args {
			if v != "" {
				pairs = append(pairs, v, "******")
			}
		}
		for _, v := range sc.Env {
			if v != "" {
				pairs = append(pairs, v, "******")
			}
		}
		if len(pairs) > 0 {
			l.mask = strings.NewReplacer(pairs...)
		}
	}
	l.mu.Lock()
	l.timer = time.AfterFunc(chunkEvery, l.tick)
	l.mu.Unlock()
	return l
}

func (l *logStream) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.flushLocked(false)
	l.timer.Reset(chunkEvery)
}

// Line appends one line of output (without its newline); overlong lines
// are cut into pieces.
func (l *logStream) Line(s string) {
	if l.mask != nil {
		s = l.mask.Replace(s)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(s) > maxLineBytes {
		l.addLocked(s[:maxLineBytes])
		s = s[maxLineBytes:]
	}
	l.addLocked(s)
}

// lineBytes is Line for a line of at most maxLineBytes that the caller
// reuses after the call: the hot path of a script's output, which copies
// the bytes once, into the chunk.
func (l *logStream) lineBytes(b []byte) {
	if l.mask != nil {
		l.Line(string(b))
		return
	}
	l.mu.Lock()
	l.addBytesLocked(b)
	l.mu.Unlock()
}

func (l *logStream) addLocked(s string) {
	if l.admitLocked() {
		l.buf = append(l.buf, s...)
		l.addedLocked()
	}
}

func (l *logStream) addBytesLocked(b []byte) {
	if l.admitLocked() {
		l.buf = append(l.buf, b...)
		l.addedLocked()
	}
}

// admitLocked starts a line: false when it is one of the lines to skip.
func (l *logStream) admitLocked() bool {
	if l.skip > 0 {
		l.skip--
		l.first++
		return false
	}
	if l.n > 0 {
		l.buf = append(l.buf, '\n')
	}
	return true
}

func (l *logStream) addedLocked() {
	l.n++
	if l.n >= chunkLines || len(l.buf) >= chunkBytes {
		l.flushLocked(false)
	}
}

func (l *logStream) flushLocked(final bool) {
	if l.n == 0 && !final {
		return
	}
	m := nats.NewMsg(l.subject)
	m.Data = bytes.Clone(l.buf)
	m.Header.Set(schemas.HdrFirstLine, strconv.Itoa(l.first))
	m.Header.Set(schemas.HdrLineCount, strconv.Itoa(l.n))
	if final {
		m.Header.Set(schemas.HdrFinal, "1")
	}
	m.Header.Set(nats.MsgIdHdr, l.exec+"."+strconv.Itoa(l.first)+map[bool]string{true: ".f", false: ""}[final])
	f, err := l.js.PublishMsgAsync(m)
	if err != nil {
		f = nil
	}
	l.published = true
	// forget the stored prefix so a long log is not held in memory
	for len(l.sent) > 0 && l.sent[0].stored() {
		l.sent = l.sent[1:]
	}
	l.sent = append(l.sent, sentChunk{m, f})
	if l.onBytes != nil {
		l.onBytes(len(m.Data))
	}
	l.first += l.n
	l.buf, l.n = l.buf[:0], 0
}

type sentChunk struct {
	msg *nats.Msg
	fut jetstream.PubAckFuture
}

func (c sentChunk) stored() bool {
	if c.fut == nil {
		return false
	}
	select {
	case <-c.fut.Ok():
		return true
	default:
		return false
	}
}

// Close publishes the final chunk, waits for every chunk's ack and returns
// the number of lines written.
//
// If a chunk's publish failed (a stream leader election, a reconnect), the
// chunks after it may have been stored or not, so from that chunk on every
// chunk is sent again, one at a time and in order, under a new message id
// (each retried until ctx ends; each attempt waits at most l.attempt for
// its ack, so a request lost in a failover does not use up the caller's
// whole wait). The log then ends with its final chunk, as readers expect,
// and a line stored twice is read once (readers take each line index once).
func (l *logStream) Close(ctx context.Context) (int, error) {
	l.mu.Lock()
	l.closed = true
	l.timer.Stop()
	l.flushLocked(true)
	sent, total := l.sent, l.first
	l.sent = nil
	l.mu.Unlock()
	return total, l.await(ctx, sent)
}

// CloseInline is Close for a log that may ride in its finished report
// (schemas.Task.InlineLog): when no chunk of it has been published and the
// lines not sent yet take at most limit bytes (the task's InlineLimit,
// never above schemas.MaxInlineLog), it publishes nothing and returns
// them, joined as that final chunk would have carried them. Otherwise it
// is Close, and log is nil.
func (l *logStream) CloseInline(ctx context.Context, limit int) (lines int, log *string, err error) {
	l.mu.Lock()
	if l.published || l.first > 0 || l.skip > 0 || len(l.buf) > limit {
		l.mu.Unlock()
		lines, err = l.Close(ctx)
		return lines, nil, err
	}
	defer l.mu.Unlock()
	l.closed = true
	l.timer.Stop()
	s := string(l.buf)
	if l.onBytes != nil {
		l.onBytes(len(s))
	}
	lines = l.n
	l.first += l.n
	l.buf, l.n = l.buf[:0], 0
	return lines, &s, nil
}

// await waits for the acks of the chunks sent, and sends again, in order,
// those from the first that failed (see Close).
func (l *logStream) await(ctx context.Context, sent []sentChunk) error {
	failed := -1
	for i, c := range sent {
		if c.fut == nil {
			failed = i
			break
		}
		select {
		case <-c.fut.Ok():
			continue
		case <-c.fut.Err():
		case <-ctx.Done():
			return ctx.Err()
		}
		failed = i
		break
	}
	if failed < 0 {
		return nil
	}
	for _, c := range sent[failed:] {
		m := nats.NewMsg(c.msg.Subject)
		m.Data = c.msg.Data
		for k, v := range c.msg.Header {
			m.Header[k] = v
		}
		m.Header.Set(nats.MsgIdHdr, c.msg.Header.Get(nats.MsgIdHdr)+".r")
		for i := 0; ; i++ {
			actx, cancel := context.WithTimeout(ctx, l.attempt)
			_, err := l.js.PublishMsg(actx, m)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("log chunk %s: %w", m.Header.Get(nats.MsgIdHdr), err)
			}
			time.Sleep(min(time.Duration(i+1)*100*time.Millisecond, time.Second))
		}
	}
	return nil
}

// lastLogChunk reads the last stored chunk of one of the agent's own log
// subjects by a direct get by subject: the one read of the LOGS stream its
// credentials allow, and only for subjects that carry its id.
func (a *Agent) lastLogChunk(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	rctx, cancel := context.WithTimeout(ctx, schemas.PublishAsyncTimeout)
	defer cancel()
	m, err := a.nc.RequestWithContext(rctx, "$JS.API.DIRECT.GET."+schemas.StreamLogs+"."+subject, nil)
	if err != nil {
		return nil, fmt.Errorf("read back log %s: %w", subject, err)
	}
	if st := m.Header.Get("Status"); st == "404" {
		return nil, jetstream.ErrMsgNotFound
	} else if st != "" {
		return nil, fmt.Errorf("read back log %s: %s %s", subject, st, m.Header.Get("Description"))
	}
	seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	return &jetstream.RawStreamMsg{Subject: m.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: m.Header, Data: m.Data}, nil
}
