// Package logindex keeps, per execution log, the line ranges of its chunks
// in Redis (first line → LOGS stream sequence), and serves line-range reads
// from that index plus direct gets. The LOGS stream is the truth: a read
// whose range the index does not cover (a flushed or lagging Redis) rebuilds
// that log's index from the stream's headers. A small task's log that rode
// in its result instead (schemas.Report.Log) is read from the result, in
// the jobs bucket.
package logindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/pull"
)

// indexKey is where a log's chunk index lives in Redis, sharded by job
// on Redis Cluster.
// IndexTTL is how long a log's index stays in Redis after its last chunk
// (or its last rebuild): the index is a cache that a read rebuilds from
// the stream, so the logs of old jobs cost Redis nothing.
const IndexTTL = 24 * time.Hour

func indexKey(r schemas.LogRef) string {
	return fmt.Sprintf("{fjlog:%d}:%d.%s.%d", r.Job, r.Step, schemas.UnitToken(r.Phase, r.Host), r.Attempt)
}

// chunk is one indexed LOGS message.
type chunk struct {
	first, count int
	seq          uint64
}

func (c chunk) member() string {
	return strconv.Itoa(c.first) + ":" + strconv.Itoa(c.count) + ":" + strconv.FormatUint(c.seq, 10)
}

func parseMember(m string) (chunk, bool) {
	p := strings.Split(m, ":")
	if len(p) != 3 {
		return chunk{}, false
	}
	f, err1 := strconv.Atoi(p[0])
	c, err2 := strconv.Atoi(p[1])
	s, err3 := strconv.ParseUint(p[2], 10, 64)
	return chunk{f, c, s}, err1 == nil && err2 == nil && err3 == nil
}

func chunkOf(h map[string][]string, seq uint64) (chunk, bool) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f, err1 := strconv.Atoi(get(schemas.HdrFirstLine))
	c, err2 := strconv.Atoi(get(schemas.HdrLineCount))
	return chunk{f, c, seq}, err1 == nil && err2 == nil
}

// Indexer consumes job log chunks and records their ranges in Redis. A
// log that rode in its result (schemas.Report.Log) has no chunk, so no
// index either: the reader serves it from the result (readInline).
type Indexer struct {
	js  jetstream.JetStream
	rdb redis.UniversalClient
	top schemas.Topology
	log *slog.Logger
}

// NewIndexer returns an indexer.
func NewIndexer(js jetstream.JetStream, rdb redis.UniversalClient, top schemas.Topology, log *slog.Logger) *Indexer {
	return &Indexer{js: js, rdb: rdb, top: top, log: log.With("component", "log-indexer")}
}

// Run indexes until ctx ends.
func (ix *Indexer) Run(ctx context.Context) error {
	cons, err := ix.js.CreateOrUpdateConsumer(ctx, schemas.StreamLogs, ix.top.IndexerConsumer())
	if err != nil {
		return fmt.Errorf("indexer consumer: %w", err)
	}
	return pull.Batches(ctx, cons, 1000, func(msgs []jetstream.Msg) { ix.index(ctx, msgs) })
}

// index records a batch of chunks in one pipeline; on failure the batch
// comes back later.
func (ix *Indexer) index(ctx context.Context, msgs []jetstream.Msg) {
	pipe := ix.rdb.Pipeline()
	for _, m := range msgs {
		meta, err := m.Metadata()
		ref, ok := schemas.LogRefOf(m.Subject())
		c, cok := chunkOf(m.Headers(), 0)
		if err != nil || !ok || !cok {
			continue
		}
		c.seq = meta.Sequence.Stream
		pipe.ZAdd(ctx, indexKey(ref), redis.Z{Score: float64(c.first), Member: c.member()})
		pipe.Expire(ctx, indexKey(ref), IndexTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		ix.log.Warn("index chunks; will retry", "err", err)
		for _, m := range msgs {
			_ = m.NakWithDelay(time.Second)
		}
		return
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// Reader serves line ranges of execution logs.
type Reader struct {
	rdb    redis.UniversalClient
	stream jetstream.Stream
	jobs   jetstream.KeyValue
	log    *slog.Logger
}

// NewReader returns a reader over the LOGS stream and, for the logs that
// rode in their results, the jobs bucket.
func NewReader(ctx context.Context, js jetstream.JetStream, rdb redis.UniversalClient, log *slog.Logger) (*Reader, error) {
	s, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		return nil, fmt.Errorf("logs stream: %w", err)
	}
	jobs, err := js.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs bucket: %w", err)
	}
	return &Reader{rdb: rdb, stream: s, jobs: jobs, log: log.With("component", "log-reader")}, nil
}

// Read returns lines from..from+limit-1 of a log.
func (r *Reader) Read(ctx context.Context, ref schemas.LogRef, from, limit int) (schemas.LogPage, error) {
	p := schemas.LogPage{From: from, To: from, Lines: []string{}}
	last, err := r.stream.GetLastMsgForSubject(ctx, ref.Subject())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return r.readInline(ctx, ref, from, limit)
	}
	if err != nil {
		return p, schemas.Unavailable(err, "read log")
	}
	lc, ok := chunkOf(last.Header, last.Sequence)
	if !ok {
		return p, fmt.Errorf("log chunk %d without line headers", last.Sequence)
	}
	p.Total = lc.first + lc.count
	p.Complete = last.Header.Get(schemas.HdrFinal) == "1"
	if from >= p.Total || limit <= 0 {
		return p, nil
	}
	end := min(from+limit, p.Total)
	chunks, ok := r.lookup(ctx, ref, from, end)
	if !ok {
		if chunks, err = r.rebuild(ctx, ref); err != nil {
			return p, err
		}
		chunks = cover(chunks, from, end)
	}
	for _, c := range chunks {
		if c.count == 0 {
			continue
		}
		m, err := r.stream.GetMsg(ctx, c.seq)
		if err != nil {
			return p, schemas.Unavailable(err, "read log chunk %d", c.seq)
		}
		lines := strings.Split(string(m.Data), "\n")
		for i, l := range lines {
			// chunks may overlap (an agent resends after a failed
			// publish): each line index is taken once, in order
			if n := c.first + i; n == from+len(p.Lines) && n < end {
				p.Lines = append(p.Lines, l)
			}
		}
	}
	p.To = from + len(p.Lines)
	return p, nil
}

// readInline serves a log that LOGS does not hold from its execution's
// result, when the log rode there (schemas.Report.Log), exactly as one
// final chunk of its lines would be served. A log found nowhere is an
// empty page, not complete: its execution has not written any yet.
func (r *Reader) readInline(ctx context.Context, ref schemas.LogRef, from, limit int) (schemas.LogPage, error) {
	p := schemas.LogPage{From: from, To: from, Lines: []string{}}
	hr, ok, err := r.inlineResult(ctx, ref)
	if err != nil || !ok {
		return p, err
	}
	lines := schemas.InlineLines(*hr.Log, hr.Lines)
	p.Total, p.Complete = len(lines), true
	if from >= p.Total || limit <= 0 {
		return p, nil
	}
	p.Lines = lines[from:min(from+limit, p.Total)]
	p.To = from + len(p.Lines)
	return p, nil
}

// inlineResult finds the result of ref's execution if it carries its log:
// a larger job's in the unit's result segment; a small job's in its state,
// where it keeps its units' latest results, or, for an attempt a retry
// superseded, under its own key. The segment is read first: a larger job's
// state (thousands of hosts) is not decoded when its segment answers, and
// a small job has none. Only script units have one; for an upload unit ok
// is false.
func (r *Reader) inlineResult(ctx context.Context, ref schemas.LogRef) (schemas.HostResult, bool, error) {
	if ref.Phase != "" {
		return schemas.HostResult{}, false, nil
	}
	if hr, ok, segment, err := r.segmentResult(ctx, ref); segment || err != nil {
		return hr, ok, err
	}
	e, err := r.jobs.Get(ctx, schemas.KeyJobState(ref.Job))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.HostResult{}, false, nil
	}
	if err != nil {
		return schemas.HostResult{}, false, schemas.Unavailable(err, "read job %d", ref.Job)
	}
	var st struct {
		Results []schemas.HostResult `json:"results"`
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return schemas.HostResult{}, false, fmt.Errorf("decode job %d: %w", ref.Job, err)
	}
	i := slices.IndexFunc(st.Results, func(hr schemas.HostResult) bool {
		return hr.Step == ref.Step && hr.Phase == ref.Phase && hr.Index == ref.Host
	})
	switch {
	case i < 0:
		return schemas.HostResult{}, false, nil
	case st.Results[i].Attempt == ref.Attempt:
		return st.Results[i], st.Results[i].Log != nil, nil
	case st.Results[i].Attempt > ref.Attempt:
		return r.supersededResult(ctx, ref)
	}
	return schemas.HostResult{}, false, nil
}

// segmentResult reads a larger job's result of ref's execution from its
// segment (schemas.ResultSegmentValue), the latest attempt's or an
// earlier one kept for its log; segment says whether the segment exists
// (the job is a larger one, and one of the segment's units has ended).
func (r *Reader) segmentResult(ctx context.Context, ref schemas.LogRef) (hr schemas.HostResult, ok, segment bool, err error) {
	var seg schemas.ResultSegmentValue
	segment, err = r.get(ctx, schemas.KeyResultSegmentOf(ref.Job, ref.Step, ref.Phase, ref.Host), &seg)
	if !segment || err != nil {
		return schemas.HostResult{}, false, segment, err
	}
	hr, ok = seg.Attempt(ref.Host, ref.Attempt)
	return hr, ok && hr.Log != nil, true, nil
}

// get decodes the jobs bucket's value of key into v; found is false when
// there is none.
func (r *Reader) get(ctx context.Context, key string, v any) (found bool, err error) {
	e, err := r.jobs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, schemas.Unavailable(err, "read %s", key)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

// supersededResult reads an earlier attempt's result that the worker kept
// apart when a retry superseded it (schemas.KeyEarlierResult).
func (r *Reader) supersededResult(ctx context.Context, ref schemas.LogRef) (schemas.HostResult, bool, error) {
	var hr schemas.HostResult
	found, err := r.get(ctx, schemas.KeyEarlierResult(ref.Job, ref.Step, ref.Phase, ref.Host, ref.Attempt), &hr)
	return hr, found && err == nil && hr.Log != nil && hr.Attempt == ref.Attempt, err
}

// lookup finds in Redis the chunks covering [from, end); ok is false when
// the index does not cover the range contiguously.
func (r *Reader) lookup(ctx context.Context, ref schemas.LogRef, from, end int) ([]chunk, bool) {
	pipe := r.rdb.Pipeline()
	head := pipe.ZRevRangeByScore(ctx, indexKey(ref), &redis.ZRangeBy{Min: "-inf", Max: strconv.Itoa(from), Count: 1})
	rest := pipe.ZRangeByScore(ctx, indexKey(ref), &redis.ZRangeBy{Min: "(" + strconv.Itoa(from), Max: "(" + strconv.Itoa(end)})
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.log.Warn("log index unavailable; reading the stream", "err", err)
		return nil, false
	}
	var out []chunk
	for _, m := range append(head.Val(), rest.Val()...) {
		if c, ok := parseMember(m); ok {
			out = append(out, c)
		}
	}
	return out, contiguous(out, from, end)
}

// contiguous reports whether chunks, in order, cover [from, end) without
// gaps (they may overlap).
func contiguous(chunks []chunk, from, end int) bool {
	if len(chunks) == 0 || chunks[0].first > from {
		return false
	}
	next := chunks[0].first
	for _, c := range chunks {
		if c.first > next {
			return false
		}
		next = max(next, c.first+c.count)
	}
	return next >= end
}

// rebuild reads every chunk header of a log from the stream and writes the
// index back to Redis.
func (r *Reader) rebuild(ctx context.Context, ref schemas.LogRef) ([]chunk, error) {
	cons, err := r.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ref.Subject()}, HeadersOnly: true,
	})
	if err != nil {
		return nil, schemas.Unavailable(err, "scan log")
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, schemas.Unavailable(err, "scan log")
	}
	defer it.Stop()
	var chunks []chunk
	for {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return nil, schemas.Unavailable(err, "scan log")
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		if c, ok := chunkOf(m.Headers(), meta.Sequence.Stream); ok {
			chunks = append(chunks, c)
		}
		if meta.NumPending == 0 {
			break
		}
	}
	if len(chunks) > 0 {
		zs := make([]redis.Z, len(chunks))
		for i, c := range chunks {
			zs[i] = redis.Z{Score: float64(c.first), Member: c.member()}
		}
		pipe := r.rdb.Pipeline()
		pipe.ZAdd(ctx, indexKey(ref), zs...)
		pipe.Expire(ctx, indexKey(ref), IndexTTL)
		if _, err := pipe.Exec(ctx); err != nil {
			r.log.Warn("write rebuilt log index", "err", err)
		}
	}
	return chunks, nil
}

// cover keeps the chunks that hold lines of [from, end).
func cover(chunks []chunk, from, end int) []chunk {
	var out []chunk
	for _, c := range chunks {
		if c.first < end && c.first+c.count > from {
			out = append(out, c)
		}
	}
	return out
}
