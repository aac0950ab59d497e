package filexfer

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// ProgressEvery is how often, at most, a transfer reports progress.
const ProgressEvery = 200 * time.Millisecond

// Meter measures one transfer: bytes moved, speed and percentage, and when
// the next progress record is due. It is not safe for concurrent use.
type Meter struct {
	total    int64
	done     int64
	every    time.Duration
	start    time.Time
	last     time.Time
	lastDone int64
	speed    int64
	now      func() time.Time
}

// NewMeter starts measuring a transfer of total bytes that reports at most
// once per every.
func NewMeter(total int64, every time.Duration) *Meter {
	now := time.Now()
	return &Meter{total: total, every: every, start: now, last: now, now: time.Now}
}

// Add counts n more bytes and reports whether a progress record is due (at
// least every has passed since the last one); when it is, Speed is
// refreshed to the rate over that interval.
func (m *Meter) Add(n int64) bool {
	m.done += n
	now := m.now()
	dt := now.Sub(m.last)
	if dt < m.every {
		return false
	}
	m.speed = int64(float64(m.done-m.lastDone) / dt.Seconds())
	m.last, m.lastDone = now, m.done
	return true
}

// Done is the number of bytes counted so far.
func (m *Meter) Done() int64 { return m.done }

// Elapsed is the time since the meter started.
func (m *Meter) Elapsed() time.Duration { return m.now().Sub(m.start) }

// Speed is the rate in bytes per second over the last reporting interval.
func (m *Meter) Speed() int64 { return m.speed }

// Average is the rate in bytes per second since the start.
func (m *Meter) Average() int64 {
	s := m.Elapsed().Seconds()
	if s <= 0 {
		return m.done
	}
	return int64(float64(m.done) / s)
}

// Percent is the share of the total done, 0 to 100; an empty transfer
// stays at 0 (its final record says 100).
func (m *Meter) Percent() int {
	if m.total <= 0 {
		return 0
	}
	p := m.done * 100 / m.total
	return int(min(max(p, 0), 100))
}

// FormatBytes renders a size the way transfer logs do: "512B", "12.3KB",
// "4.0MB", "1.5GB" (powers of 1024).
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, suffix := float64(n)/unit, "KB"
	for _, s := range []string{"MB", "GB", "TB"} {
		if f < unit {
			break
		}
		f, suffix = f/unit, s
	}
	return fmt.Sprintf("%.1f%s", f, suffix)
}

// reporter sends one file's transfer records: status updates while bytes
// move, then one final success or failure.
type reporter struct {
	fn   func(schemas.FileLog)
	base schemas.FileLog
	verb string // "Upload" or "Download"
	ing  string // "Uploading" or "Downloading"
	what string // the file, as the log line names it
}

func (r *reporter) send(status, percent int, speed int64, msg string) {
	if r.fn == nil {
		return
	}
	rec := r.base
	rec.Status, rec.Progress, rec.Speed = status, percent, speed
	rec.Content = "[" + time.Now().Format(time.DateTime) + "] " + msg
	r.fn(rec)
}

// tick reports the transfer in progress.
func (r *reporter) tick(m *Meter, status int) {
	r.send(status, m.Percent(), m.Speed(), fmt.Sprintf("%s %s ... %d%% %s/s",
		r.ing, r.what, m.Percent(), FormatBytes(m.Speed())))
}

// finish reports the end of the transfer: success when err is nil.
func (r *reporter) finish(m *Meter, err error, note string) {
	if err != nil {
		r.send(schemas.FileFailed, m.Percent(), m.Average(), fmt.Sprintf("%s failed %s: %v", r.verb, r.what, err))
		return
	}
	if note != "" {
		note = " (" + note + ")"
	}
	r.send(schemas.FileSuccess, 100, m.Average(), fmt.Sprintf("%s success %s %s in %.1fs, %s/s%s",
		r.verb, r.what, FormatBytes(m.Done()), m.Elapsed().Seconds(), FormatBytes(m.Average()), note))
}

// meterReader counts what passes through it and calls tick when a
// progress record is due.
type meterReader struct {
	r    io.Reader
	m    *Meter
	tick func()
}

func (mr *meterReader) Read(p []byte) (int, error) {
	n, err := mr.r.Read(p)
	if n > 0 && mr.m.Add(int64(n)) {
		mr.tick()
	}
	return n, err
}

// limitBurst is how far ahead of its schedule a limited reader may run.
const limitBurst = 100 * time.Millisecond

// limitReader paces reads from r to bytesPerSec (0 or less: r itself). Each
// read is capped at a tenth of a second's worth, so pacing stays smooth.
func limitReader(ctx context.Context, r io.Reader, bytesPerSec int64) io.Reader {
	if bytesPerSec <= 0 {
		return r
	}
	return &limitedReader{ctx: ctx, r: r, rate: float64(bytesPerSec),
		max: int(min(max(bytesPerSec/10, 4<<10), 1<<20))}
}

// limitedReader is a token bucket kept as the time the bytes read so far
// are due (next): a read that gets ahead of it sleeps until then.
type limitedReader struct {
	ctx  context.Context
	r    io.Reader
	rate float64
	max  int
	next time.Time
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if len(p) > l.max {
		p = p[:l.max]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		if werr := l.wait(n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (l *limitedReader) wait(n int) error {
	now := time.Now()
	if floor := now.Add(-limitBurst); l.next.Before(floor) {
		l.next = floor
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	d := l.next.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-l.ctx.Done():
		return fmt.Errorf("speed limit wait: %w", l.ctx.Err())
	}
}
