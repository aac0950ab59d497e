package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// A script writes its output (stdout and stderr, merged) straight into a
// spool file in the agent's data dir, not into a pipe the agent holds: if
// the agent dies, the script's lines keep landing in the file, and the
// restarted agent publishes whatever the LOGS stream is missing before it
// reports the execution interrupted. No line is lost with the agent.
//
// The agent follows the file as it grows. We follow it ourselves rather
// than with a tail library (nxadm/tail was tried): it drops a final line
// without a newline and lines still in flight when told to stop at EOF,
// and after a partial line it seeks to the end of the file, skipping
// whatever was written in between — each of which would lose a line.
// fsnotify (one inotify instance per agent) says when to read again; a
// slow timer covers a missed or unavailable notification.

// spoolDir is where an agent's executions write their output.
func spoolDir(dataDir, agentID string) string { return filepath.Join(dataDir, "output", agentID) }

// spoolPath is one execution's output file.
func spoolPath(dir, exec string) string { return filepath.Join(dir, exec+".out") }

// followPoll is how often a followed file is read when no notification
// comes.
const followPoll = 250 * time.Millisecond

// spoolWatcher says when files in an agent's spool dir are written. Each
// running agent has one (one inotify instance), closed when it stops.
type spoolWatcher struct {
	w    *fsnotify.Watcher // nil when notifications are unavailable
	mu   sync.Mutex
	subs map[string]chan struct{}
	done chan struct{} // closed when the goroutine forwarding events ends
}

// watchSpool watches dir. Without notifications (no inotify, or too many
// instances) the watcher works all the same and followers poll.
func watchSpool(dir string) *spoolWatcher {
	sw := &spoolWatcher{subs: map[string]chan struct{}{}, done: make(chan struct{})}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(dir); err != nil {
			w.Close()
		}
	}
	if err != nil {
		close(sw.done)
		return sw
	}
	sw.w = w
	go sw.forward()
	return sw
}

// forward signals the subscriber of each written file until the watcher
// is closed.
func (sw *spoolWatcher) forward() {
	defer close(sw.done)
	for {
		select {
		case ev, ok := <-sw.w.Events:
			if !ok {
				return
			}
			sw.mu.Lock()
			ch := sw.subs[ev.Name]
			sw.mu.Unlock()
			if ch != nil {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		case _, ok := <-sw.w.Errors:
			if !ok {
				return
			}
		}
	}
}

// close stops watching and waits for the forwarding goroutine to end.
func (sw *spoolWatcher) close() {
	if sw.w != nil {
		sw.w.Close()
	}
	<-sw.done
}

// subscribe returns a channel that gets a (coalesced) signal whenever path
// is written, and a function to stop. A nil watcher never signals.
func (sw *spoolWatcher) subscribe(path string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	if sw == nil || sw.w == nil {
		return ch, func() {}
	}
	sw.mu.Lock()
	sw.subs[path] = ch
	sw.mu.Unlock()
	return ch, func() {
		sw.mu.Lock()
		delete(sw.subs, path)
		sw.mu.Unlock()
	}
}

// lineCutter turns a byte stream into lines the same way every time, so
// that the live follower and a restarted agent agree on line indices:
// lines end at '\n' (a trailing '\r' is dropped) and a line longer than
// maxLineBytes is cut into pieces of that size.
type lineCutter struct {
	pending []byte
	// emit gets each line; the slice is only valid during the call.
	emit func([]byte)
}

func (c *lineCutter) write(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.pending = append(c.pending, b...)
			c.cut()
			return
		}
		line := b[:i]
		if len(c.pending) > 0 {
			c.pending = append(c.pending, line...)
			c.cut()
			line = c.pending
		} else {
			for len(line) > maxLineBytes { // as cut does, without the copy
				c.emit(line[:maxLineBytes])
				line = line[maxLineBytes:]
			}
		}
		c.emit(bytes.TrimRight(line, "\r"))
		c.pending = c.pending[:0]
		b = b[i+1:]
	}
}

// cut emits the full-size pieces of an overlong pending line, keeping at
// least one byte back so a piece never ends exactly at a newline.
func (c *lineCutter) cut() {
	for len(c.pending) > maxLineBytes {
		c.emit(c.pending[:maxLineBytes])
		c.pending = append(c.pending[:0], c.pending[maxLineBytes:]...)
	}
}

// end emits what is left of a last line without a newline.
func (c *lineCutter) end() {
	if len(c.pending) > 0 {
		c.emit(bytes.TrimRight(c.pending, "\r"))
		c.pending = c.pending[:0]
	}
}

// follow reads path as it grows, giving each line to emit, until exited is
// closed and everything written by then has been read. It reads again
// when sw says the file was written, or every followPoll (always, when sw
// is nil).
func follow(sw *spoolWatcher, path string, exited <-chan struct{}, emit func([]byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	wake, stop := sw.subscribe(path)
	defer stop()
	c := lineCutter{emit: emit}
	buf := make([]byte, 64<<10)
	done := false
	poll := time.NewTimer(followPoll)
	defer poll.Stop()
	for {
		n, err := f.Read(buf)
		c.write(buf[:n])
		switch {
		case err == nil:
			continue
		case !errors.Is(err, io.EOF):
			c.end()
			return err
		case done:
			c.end()
			return nil
		}
		select {
		case <-exited:
			done = true // one more read: what was written before the exit
		case <-wake:
		case <-poll.C:
		}
		if !poll.Stop() {
			select {
			case <-poll.C:
			default:
			}
		}
		poll.Reset(followPoll)
	}
}

// readSpool gives every line of a finished spool file to emit.
func readSpool(path string, emit func([]byte)) error {
	closed := make(chan struct{})
	close(closed)
	return follow(nil, path, closed, emit)
}
