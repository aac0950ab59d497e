package agent

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// Chunking limits of a log stream.
const (
	chunkLines   = 512
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

	mu      sync.Mutex
	lines   []string
	size    int
	first   int // index of lines[0]
	futs    []jetstream.PubAckFuture
	err     error
	timer   *time.Timer
	closed  bool
	onBytes func(int)
	// mask replaces sensitive parameter values in every line.
	mask *strings.Replacer
}

func newLogStream(js jetstream.JetStream, t *schemas.Task, onBytes func(int)) *logStream {
	l := &logStream{
		js: js, subject: schemas.UnitLogSubject(t.JobID, t.Step, t.Phase, t.Host, t.Attempt),
		exec: t.ExecID, onBytes: onBytes,
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

func (l *logStream) addLocked(s string) {
	l.lines = append(l.lines, s)
	l.size += len(s) + 1
	if len(l.lines) >= chunkLines || l.size >= chunkBytes {
		l.flushLocked(false)
	}
}

func (l *logStream) flushLocked(final bool) {
	if len(l.lines) == 0 && !final {
		return
	}
	m := nats.NewMsg(l.subject)
	m.Data = []byte(strings.Join(l.lines, "\n"))
	m.Header.Set(schemas.HdrFirstLine, strconv.Itoa(l.first))
	m.Header.Set(schemas.HdrLineCount, strconv.Itoa(len(l.lines)))
	if final {
		m.Header.Set(schemas.HdrFinal, "1")
	}
	m.Header.Set(nats.MsgIdHdr, l.exec+"."+strconv.Itoa(l.first)+map[bool]string{true: ".f", false: ""}[final])
	f, err := l.js.PublishMsgAsync(m)
	if err != nil && l.err == nil {
		l.err = err
	}
	if f != nil {
		l.futs = append(l.futs, f)
	}
	if l.onBytes != nil {
		l.onBytes(len(m.Data))
	}
	l.first += len(l.lines)
	l.lines, l.size = l.lines[:0], 0
}

// Close publishes the final chunk, waits for every chunk's ack and returns
// the number of lines written.
func (l *logStream) Close(ctx context.Context) (int, error) {
	l.mu.Lock()
	l.closed = true
	l.timer.Stop()
	l.flushLocked(true)
	futs, total, err := l.futs, l.first, l.err
	l.mu.Unlock()
	if err != nil {
		return total, err
	}
	return total, events.Await(ctx, futs)
}
