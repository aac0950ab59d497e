// Package statuscache keeps job and host status in Redis for fast reads,
// listing and sorting. Redis is only a cache: every entry carries the KV
// revision it was built from, older writes never replace newer ones, and a
// miss (or a flushed Redis) is rebuilt from the jobs KV bucket.
package statuscache

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/fleetjob/fleetjob/schemas"
)

// All keys share one hash tag so the Lua scripts stay valid on Redis Cluster.
const (
	keyPrefix  = "{fj}:"
	keyAll     = keyPrefix + "jobs"
	keyUpdated = keyPrefix + "jobs:upd"
	// keyBuilt marks a cache rebuilt by this layout (v2: with the scope
	// index); a cache of an older layout is rebuilt once.
	keyBuilt    = keyPrefix + "built:v2"
	completeFld = "_complete"
)

func keyJob(id int64) string            { return keyPrefix + "job:" + strconv.FormatInt(id, 10) }
func keyHosts(id int64) string          { return keyPrefix + "hosts:" + strconv.FormatInt(id, 10) }
func keyStatus(st string) string        { return keyPrefix + "jobs:st:" + st }
func keyName(name string) string        { return keyPrefix + "jobs:name:" + name }
func keyScope(scope string) string      { return keyPrefix + "jobs:scope:" + scope }
func keyHostJobs(h schemas.Host) string { return keyPrefix + "hostjobs:" + h.String() }
func hostField(step int, phase string, idx int) string {
	return strconv.Itoa(step) + "." + schemas.UnitToken(phase, idx)
}

// putHosts sets host rows "rev|row" (rows.go) field by field, never over a newer row.
var putHosts = redis.NewScript(putHostsLua)

const putHostsLua = `
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local keep = false
  if cur then
    local r = tonumber(string.match(cur, '^(%d+)|'))
    if r and r > tonumber(ARGV[i+1]) then keep = true end
  end
  if not keep then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1] .. '|' .. ARGV[i+2]) end
end
return 1
`

// Cache is the Redis status cache with its JetStream fallback.
type Cache struct {
	// downUntil (unix nanoseconds) skips Redis reads for a moment after one
	// failed, so a stalled Redis costs one timeout, not one per read.
	downUntil atomic.Int64

	rdb  redis.UniversalClient
	kv   jetstream.KeyValue
	cmds jetstream.Stream
	log  *slog.Logger
	sf   singleflight.Group

	lanes lanes

	retentionMu sync.Mutex
	retention   Retention

	// repairs are the jobs whose last cache write failed (repair.go).
	repairMu sync.Mutex
	repairs  map[int64]struct{}
}

// New returns a cache over rdb that rebuilds from the jobs bucket kv; cmds
// is the JOBS stream, where jobs no worker has taken yet are found.
func New(rdb redis.UniversalClient, kv jetstream.KeyValue, cmds jetstream.Stream, log *slog.Logger) *Cache {
	return &Cache{rdb: rdb, kv: kv, cmds: cmds, log: log.With("component", "statuscache")}
}

// errRedisDown stands for a read skipped while Redis is considered down.
var errRedisDown = errors.New("redis recently failed; reading JetStream")

// redisDownFor is how long reads skip Redis after a failure.
const redisDownFor = 2 * time.Second

func (c *Cache) redisUp() bool { return time.Now().UnixNano() >= c.downUntil.Load() }

func (c *Cache) redisFailed(err error, id int64) {
	if errors.Is(err, errRedisDown) {
		return
	}
	c.downUntil.Store(time.Now().Add(redisDownFor).UnixNano())
	c.log.Warn("redis read failed; answering from JetStream", "job", id, "err", err)
}

// JobsBucket is the jobs KV bucket the cache rebuilds from.
func (c *Cache) JobsBucket() jetstream.KeyValue { return c.kv }

// Queued caches a job the API has just accepted, before any worker took it.
// Revision 0 makes any worker write replace it.
func (c *Cache) Queued(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState) error {
	err := c.run(ctx, func(pipe redis.Pipeliner) {
		c.queueJob(ctx, pipe, schemas.Summarize(spec, st), 0)
		queueHostIndex(ctx, pipe, spec, st.ID)
	})
	if err != nil {
		return fmt.Errorf("cache queued job %d: %w", st.ID, err)
	}
	return nil
}

// run executes the pipeline build makes. The revision-guarded writes run
// as loaded scripts (EVALSHA); when Redis has lost them (a restart, a
// SCRIPT FLUSH) run loads them and sends the pipeline again: every command
// in it is safe to repeat.
func (c *Cache) run(ctx context.Context, build func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := c.rdb.Pipeline()
		build(pipe)
		_, err := pipe.Exec(ctx)
		if err == nil || attempt > 0 || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
			return err
		}
		for _, sc := range []*redis.Script{putJob, putHosts} {
			if err := sc.Load(ctx, c.rdb).Err(); err != nil {
				return err
			}
		}
	}
}

// queued finds a job whose submit command still waits in the JOBS stream.
func (c *Cache) queued(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, bool) {
	m, err := c.cmds.GetMsg(ctx, uint64(id))
	if err != nil || m.Subject != schemas.SubjSubmit {
		return nil, nil, false
	}
	var cmd schemas.SubmitCommand
	if json.Unmarshal(m.Data, &cmd) != nil || cmd.Spec.Normalize() != nil {
		return nil, nil, false
	}
	return &cmd.Spec, schemas.NewJobState(id, &cmd.Spec, m.Time.UTC()), true
}

// Created writes a new job: its summary, its place in the per-host index and
// every host row, and marks the row set complete.
func (c *Cache) Created(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, rows []schemas.HostRow) error {
	return c.write(ctx, spec, st, rev, rows, true)
}

// Update writes a committed job state: the summary, its index entries and the
// rows of the hosts that changed.
func (c *Cache) Update(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, rows []schemas.HostRow) error {
	return c.write(ctx, spec, st, rev, rows, false)
}

func (c *Cache) write(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, rows []schemas.HostRow, complete bool) error {
	sum := schemas.Summarize(spec, st)
	args := make([]any, 0, 3*len(rows))
	for _, r := range rows {
		args = append(args, hostField(r.Step, r.Phase, r.Index), rev, encodeRow(r))
	}
	// the summary goes last: Redis runs a pipeline's commands in order,
	// and other clients' between them, so whoever reads the new summary
	// finds its rows written too
	err := c.runGrouped(ctx, len(rows), func(pipe redis.Pipeliner) {
		if complete {
			queueHostIndex(ctx, pipe, spec, st.ID)
		}
		// rows in scripts of at most rowsPerScript, so one big commit
		// does not hold Redis in one script for long
		for a := args; len(a) > 0; {
			n := min(len(a), 3*rowsPerScript)
			putHosts.EvalSha(ctx, pipe, []string{keyHosts(st.ID)}, a[:n]...)
			a = a[n:]
		}
		if complete {
			pipe.HSet(ctx, keyHosts(st.ID), completeFld, "1")
		}
		c.queueJob(ctx, pipe, sum, rev)
	})
	if err != nil {
		c.stale(st.ID) // rewritten from JetStream later: see repair.go
		return fmt.Errorf("cache job %d (to be repaired from JetStream): %w", st.ID, err)
	}
	return nil
}

// rowsPerScript bounds the host rows one putHosts call writes.
const rowsPerScript = 1000

func queueHostIndex(ctx context.Context, pipe redis.Pipeliner, spec *schemas.JobSpec, id int64) {
	for _, h := range allTargets(spec) {
		pipe.ZAdd(ctx, keyHostJobs(h), redis.Z{Score: float64(id), Member: id})
	}
}

// allTargets lists every host a job touches, once.
func allTargets(spec *schemas.JobSpec) []schemas.Host {
	seen := map[schemas.Host]bool{}
	var out []schemas.Host
	for _, step := range spec.Steps {
		for _, h := range step.Targets {
			if !seen[h] {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	return out
}

func (c *Cache) queueJob(ctx context.Context, pipe redis.Pipeliner, sum schemas.JobSummary, rev uint64) {
	b, _ := json.Marshal(sum)
	keys := []string{keyJob(sum.ID), keyAll, keyUpdated, keyName(sum.Name)}
	stIdx := 0
	for i, s := range schemas.JobStatuses {
		keys = append(keys, keyStatus(s))
		if s == sum.Status {
			stIdx = i + 1
		}
	}
	putJob.EvalSha(ctx, pipe, keys, rev, b, sum.ID, sum.Status, sum.UpdatedAt.UnixMilli(), stIdx)
	if sum.Scope != "" { // a job's scope never changes: no move, no revision check
		pipe.ZAdd(ctx, keyScope(sum.Scope), redis.Z{Score: float64(sum.ID), Member: sum.ID})
	}
}

// Load reads a job's spec and state from the KV bucket.
func (c *Cache) Load(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, uint64, error) {
	se, err := c.kv.Get(ctx, schemas.KeyJobState(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if spec, st, ok := c.queued(ctx, id); ok {
			return spec, st, 0, nil
		}
		return nil, nil, 0, schemas.NotFound("job %d does not exist", id)
	}
	if err != nil {
		return nil, nil, 0, schemas.Unavailable(err, "load job %d", id)
	}
	var st schemas.JobState
	if err := json.Unmarshal(se.Value(), &st); err != nil {
		return nil, nil, 0, fmt.Errorf("decode job %d: %w", id, err)
	}
	spec, err := c.LoadSpec(ctx, id)
	if err != nil {
		return nil, nil, 0, err
	}
	return spec, &st, se.Revision(), nil
}

// LoadSpec reads a job's spec: its submit command in JOBS (the job id is
// its sequence), or the spec key of the jobs bucket for a job whose
// command cannot serve (see schemas.KeyJobSpec).
func (c *Cache) LoadSpec(ctx context.Context, id int64) (*schemas.JobSpec, error) {
	m, err := c.cmds.GetMsg(ctx, uint64(id))
	switch {
	case err == nil && m.Subject == schemas.SubjSubmit:
		var cmd schemas.SubmitCommand
		if json.Unmarshal(m.Data, &cmd) == nil && cmd.Spec.Normalize() == nil {
			return &cmd.Spec, nil
		}
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, schemas.Unavailable(err, "load job %d spec", id)
	}
	e, err := c.kv.Get(ctx, schemas.KeyJobSpec(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, schemas.NotFound("job %d does not exist", id)
	}
	if err != nil {
		return nil, schemas.Unavailable(err, "load job %d spec", id)
	}
	var spec schemas.JobSpec
	if err := json.Unmarshal(e.Value(), &spec); err != nil {
		return nil, fmt.Errorf("decode job %d spec: %w", id, err)
	}
	return &spec, nil
}

// Job returns a job's summary from Redis, or rebuilt from KV on a miss or
// when Redis does not answer.
func (c *Cache) Job(ctx context.Context, id int64) (schemas.JobSummary, error) {
	var sum schemas.JobSummary
	var v []byte
	err := errRedisDown
	if c.redisUp() {
		v, err = readSummary(c.rdb.Get(ctx, keyJob(id)))
	}
	if err == nil && json.Unmarshal(v, &sum) == nil {
		return sum, nil
	}
	if legacy(err) || errors.Is(err, errBadSummary) {
		err = redis.Nil // an older fleetjob's hash, or garbage: rewritten below
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		c.redisFailed(err, id)
	}
	spec, st, rev, lerr := c.Load(ctx, id)
	if lerr != nil {
		return sum, lerr
	}
	sum = schemas.Summarize(spec, st)
	if err == nil || errors.Is(err, redis.Nil) {
		if perr := c.run(ctx, func(pipe redis.Pipeliner) { c.queueJob(ctx, pipe, sum, rev) }); perr != nil {
			c.log.Warn("repopulate job", "job", id, "err", perr)
		}
	}
	return sum, nil
}

// Hosts returns every host row of a job, in step then target order.
func (c *Cache) Hosts(ctx context.Context, id int64) ([]schemas.HostRow, error) {
	var m map[string]string
	err := errRedisDown
	if c.redisUp() {
		m, err = c.rdb.HGetAll(ctx, keyHosts(id)).Result()
	}
	if err == nil && m[completeFld] == "1" {
		rows := make([]schemas.HostRow, 0, len(m))
		for k, v := range m {
			if k == completeFld {
				continue
			}
			if r, ok := decodeRow(k, v); ok {
				rows = append(rows, r)
			}
		}
		sortRows(rows)
		return rows, nil
	}
	if err != nil {
		c.redisFailed(err, id)
	}
	spec, st, rev, lerr := c.Load(ctx, id)
	if lerr != nil {
		return nil, lerr
	}
	rows, lerr := c.rowsFromKV(ctx, spec, st)
	if lerr != nil {
		return nil, lerr
	}
	if err == nil {
		if uerr := c.Created(ctx, spec, st, rev, rows); uerr != nil {
			c.log.Warn("repopulate hosts", "job", id, "err", uerr)
		}
	}
	return rows, nil
}

// rowsFromKV joins the state table with the stored host results.
func (c *Cache) rowsFromKV(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState) ([]schemas.HostRow, error) {
	results := map[string]schemas.HostResult{}
	if spec.InlineResults() {
		for _, r := range st.Results {
			results[hostField(r.Step, r.Phase, r.Index)] = r
		}
		return BuildRows(spec, st, results), nil
	}
	lister, err := c.kv.ListKeysFiltered(ctx, schemas.KeyHostResults(st.ID))
	if err != nil {
		return nil, schemas.Unavailable(err, "list host results of job %d", st.ID)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := c.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var seg schemas.ResultSegmentValue
		if json.Unmarshal(e.Value(), &seg) == nil {
			for _, r := range seg.Results {
				results[hostField(r.Step, r.Phase, r.Index)] = r
			}
		}
	}
	return BuildRows(spec, st, results), nil
}

// BuildRows makes every host row of a job from its state table, filling in
// stored results where the table agrees with them (without their inline
// logs: a row is never a log).
func BuildRows(spec *schemas.JobSpec, st *schemas.JobState, results map[string]schemas.HostResult) []schemas.HostRow {
	var rows []schemas.HostRow
	for i, ss := range st.Steps {
		for j, status := range ss.Hosts.Status {
			r := schemas.HostRow{Since: st.At(ss.Hosts.Since[j])}
			if res, ok := results[hostField(i, "", j)]; ok {
				r.HostResult = res.WithoutLog()
			}
			r.Step, r.Index, r.Status = i, j, status
			if i < len(spec.Steps) && j < len(spec.Steps[i].Targets) {
				r.Host = spec.Steps[i].Targets[j]
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func sortRows(rows []schemas.HostRow) {
	slices.SortFunc(rows, func(a, b schemas.HostRow) int {
		if c := cmp.Compare(a.Step, b.Step); c != 0 {
			return c
		}
		return cmp.Compare(a.Index, b.Index)
	})
}
