package schemas

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// This file is the one place that knows fleetjob's subject names and its
// stream, consumer and bucket settings.

// Stream names.
const (
	StreamJobs    = "JOBS"
	StreamTasks   = "TASKS"
	StreamResults = "RESULTS"
	StreamLogs    = "LOGS"
	StreamEvents  = "EVENTS"
)

// KV bucket names.
const (
	BucketJobs   = "jobs"   // job specs, states and per-host results
	BucketNames  = "names"  // claimed names and idempotency keys
	BucketAgents = "agents" // agent registry, refreshed by heartbeats
	BucketSweep  = "sweep"  // the sweeper's bookmark in the jobs bucket's stream
	BucketLeases = "leases" // short leases, e.g. the sweeper's
	// BucketDeadLetters keeps messages that failed for good, by stream and sequence.
	BucketDeadLetters = "deadletters"
	// BucketArtifacts is the object store of files to distribute.
	BucketArtifacts = "artifacts"
	// BucketEnrolled holds each agent's Enrolment, by agent id; only the
	// API writes it.
	BucketEnrolled = "enrolled"
	// BucketAccounts maps execution account aliases to OS users, by
	// AccountKey(scope, alias); only the API writes it.
	BucketAccounts = "accounts"
	// BucketIdentities holds the API's credentials (users' tokens,
	// BlueKing apps), by kind and id, secrets only as hashes; only the API
	// reads or writes it.
	BucketIdentities = "identities"
)

// Subjects.
const (
	SubjSubmit  = subjCmdPrefix + "submit"
	SubjStop    = subjCmdPrefix + "stop"
	SubjOp      = subjCmdPrefix + "op"
	subjCmdAll  = subjCmdPrefix + ">"
	subjTaskAll = taskSubjectPrefix + ">"
	subjResAll  = "fleetjob.result.>"
	subjLogAll  = "fleetjob.log.>"
	SubjJobLogs = "fleetjob.log.job.>"
	subjEvAll   = SubjEventPrefix + ">"
)

// Subjects that match whole families, for permissions.
const (
	// SubjCommands matches every command subject.
	SubjCommands = subjCmdAll
	// SubjTasks matches every task subject.
	SubjTasks = subjTaskAll
	// SubjControls matches every agent's control subject.
	SubjControls = "fleetjob.ctl.>"
	// SubjSweeperResults matches the sweeper's kicks.
	SubjSweeperResults = resultSubjectPrefix + sweeperToken + ".*"
	// SubjPartitionedSweeperResults matches the sweeper's kicks into a
	// partitioned RESULTS stream.
	SubjPartitionedSweeperResults = resultSubjectPrefix + "*." + sweeperToken + "." + sweeperAgent + ".*"
)

// subjCmdPrefix starts every command subject.
const subjCmdPrefix = "fleetjob.cmd."

// IsCommandSubject reports whether subj is a command's subject (the JOBS
// stream's).
func IsCommandSubject(subj string) bool { return strings.HasPrefix(subj, subjCmdPrefix) }

// KVSubject is the subject a value of key in a KV bucket is stored on.
// Publishing to it is a Put; many can be published asynchronously and
// awaited together instead of a round trip each.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// SubjEventPrefix starts every event subject, fleetjob.event.<kind>.<id>;
// package events builds them on it.
const SubjEventPrefix = "fleetjob.event."

// SubjJobFinished matches the job.finished event of every job.
const SubjJobFinished = SubjEventPrefix + "job.finished.*"

// Durable consumer names.
const (
	ConsumerCommands = "workers-commands"
	ConsumerResults  = "workers-results"
	ConsumerIndexer  = "log-indexer"
	// ConsumerCallbacks delivers callbacks of finished jobs.
	ConsumerCallbacks = "callbacks"
)

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidAgentID reports whether id can be used as an agent id (it becomes a
// subject token and a consumer name).
func ValidAgentID(id string) bool { return agentIDPattern.MatchString(id) }

// DefaultPool is the task pool of real agents: each has its own consumer.
// A simulator (agent --simulate) serves many identities from one pool with
// one consumer.
const DefaultPool = "a"

// TaskSubject is where tasks for one agent and one job are published.
func TaskSubject(pool, agent string, job int64) string {
	return taskSubjectPrefix + pool + "." + agent + "." + strconv.FormatInt(job, 10)
}

// taskSubjectPrefix starts every task subject.
const taskSubjectPrefix = "fleetjob.task."

// AgentOfTaskSubject reads the agent back from a task subject; ok is false
// for any other subject.
func AgentOfTaskSubject(subj string) (agent string, ok bool) {
	rest, ok := strings.CutPrefix(subj, taskSubjectPrefix)
	if !ok {
		return "", false
	}
	p := strings.Split(rest, ".")
	if len(p) != 3 {
		return "", false
	}
	return p[1], true
}

// TaskPurgeSubject matches every task of one job on every agent.
func TaskPurgeSubject(job int64) string {
	return taskSubjectPrefix + "*.*." + strconv.FormatInt(job, 10)
}

// ControlSubject is the core-NATS subject an agent answers kill requests on.
func ControlSubject(pool, agent string) string { return "fleetjob.ctl." + pool + "." + agent }

// PoolControlSubject matches the control subjects of a whole pool.
func PoolControlSubject(pool string) string { return "fleetjob.ctl." + pool + ".*" }

// Transfer subjects carry the agent that asks: an agent fetches a file
// step's files from the artifact relay on fleetjob.xfer.get.<pool>.<agent>
// and stores a source's files on fleetjob.xfer.put.<pool>.<agent>, then
// streams an upload's chunks on fleetjob.xfer.put.<pool>.<agent>.<session>.
// Its credentials allow these for its own pool and id only, so the relay
// knows who asks from the subject.
const (
	xferGetPrefix = "fleetjob.xfer.get."
	xferPutPrefix = "fleetjob.xfer.put."
	// SubjXferGet and SubjXferPut match every agent's download and upload
	// requests: the relay's queue subscriptions.
	SubjXferGet = xferGetPrefix + "*.*"
	SubjXferPut = xferPutPrefix + "*.*"
	// SubjXferAll matches every transfer subject, upload sessions included.
	SubjXferAll = "fleetjob.xfer.>"
)

// Held first commits: a worker holding a new job's first commit while
// another worker process consumes the job's result partition (package
// orchestrator, creations.go) takes the reports that process forwards to
// it on fleetjob.held.<job>, in one request, and answers once they are
// committed. Only workers publish or subscribe there: an agent's report
// reaches a held commit only through RESULTS and a worker's checks.
const (
	heldPrefix = "fleetjob.held."
	// SubjHeldAll matches every held commit's subject, for permissions.
	SubjHeldAll = heldPrefix + ">"
)

// HeldSubject is where the held first commit of job id takes forwarded
// reports.
func HeldSubject(id int64) string { return heldPrefix + strconv.FormatInt(id, 10) }

// XferGetSubject is where an agent asks the relay for its files.
func XferGetSubject(pool, agent string) string { return xferGetPrefix + pool + "." + agent }

// XferPutSubject is where an agent starts storing a file.
func XferPutSubject(pool, agent string) string { return xferPutPrefix + pool + "." + agent }

// XferSessionSubject is where an agent sends one upload session's chunks.
func XferSessionSubject(pool, agent, session string) string {
	return XferPutSubject(pool, agent) + "." + session
}

// AgentXferSubjects are the transfer subjects agent of pool may publish on.
func AgentXferSubjects(pool, agent string) []string {
	return []string{XferGetSubject(pool, agent), XferPutSubject(pool, agent), XferPutSubject(pool, agent) + ".*"}
}

// ParseXferSubject reads pool and agent back from a download or upload
// request subject; ok is false for any other shape (a wildcard token in
// place of the agent included).
func ParseXferSubject(subj string) (pool, agent string, put, ok bool) {
	rest, found := strings.CutPrefix(subj, xferGetPrefix)
	if !found {
		if rest, found = strings.CutPrefix(subj, xferPutPrefix); !found {
			return "", "", false, false
		}
		put = true
	}
	pool, agent, found = strings.Cut(rest, ".")
	if !found || pool == "" || strings.ContainsAny(pool, "*>") || !ValidAgentID(agent) {
		return "", "", false, false
	}
	return pool, agent, put, true
}

// Log subjects carry the agent that writes them:
// fleetjob.log.job.<pool>.<agent>.<job>.<step>.<unit>.<attempt>. Readers
// that do not know the agent read with "*" in its place: an execution
// (job, step, unit, attempt) has one agent.

// LogSubject is the subject of one execution's log chunks, any agent's.
func LogSubject(job int64, step, host, attempt int) string {
	return UnitLogSubject(job, step, "", host, attempt)
}

// UnitLogSubject is LogSubject for a target or an upload unit.
func UnitLogSubject(job int64, step int, phase string, idx, attempt int) string {
	return LogRef{Job: job, Step: step, Phase: phase, Host: idx, Attempt: attempt}.Subject()
}

// AgentLogSubjects matches every log subject an agent of pool may write
// (agent "*": any agent of the pool).
func AgentLogSubjects(pool, agent string) string {
	return logSubjectPrefix + pool + "." + agent + ".>"
}

// logSubjectPrefix starts every log subject.
const logSubjectPrefix = "fleetjob.log.job."

// LogRef names one execution's log: of a target host, or (Phase upload)
// of a file step's upload unit. Its subject is UnitLogSubject.
type LogRef struct {
	Job     int64
	Step    int
	Phase   string
	Host    int
	Attempt int
	// Pool and Agent are the writer's; empty matches any (for reads).
	Pool, Agent string
}

// Subject is the subject of the log's chunks: a wildcard in the agent's
// place when Pool or Agent are empty.
func (r LogRef) Subject() string {
	pool, agent := r.Pool, r.Agent
	if pool == "" {
		pool = "*"
	}
	if agent == "" {
		agent = "*"
	}
	return fmt.Sprintf(logSubjectPrefix+"%s.%s.%d.%d.%s.%d", pool, agent, r.Job, r.Step, UnitToken(r.Phase, r.Host), r.Attempt)
}

// LogRefOf reads a log subject back; ok is false for any other subject.
func LogRefOf(subject string) (LogRef, bool) {
	rest, ok := strings.CutPrefix(subject, logSubjectPrefix)
	if !ok {
		return LogRef{}, false
	}
	p := strings.Split(rest, ".")
	if len(p) != 6 || p[0] == "" || !ValidAgentID(p[1]) {
		return LogRef{}, false
	}
	pool, agent := p[0], p[1]
	phase, host, ok := ParseUnitToken(p[4])
	if !ok {
		return LogRef{}, false
	}
	var n [3]int64 // job, step, attempt
	for i, s := range []string{p[2], p[3], p[5]} {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return LogRef{}, false
		}
		n[i] = v
	}
	return LogRef{Job: n[0], Step: int(n[1]), Phase: phase, Host: host, Attempt: int(n[2]), Pool: pool, Agent: agent}, true
}

// AgentConsumer is the durable consumer name of one agent's task queue.
func AgentConsumer(agent string) string { return "agent-" + agent }

// Job KV keys.
func KeyJobState(id int64) string { return strconv.FormatInt(id, 10) }

// KeySweepFrom is the sweep bucket's key of the sweeper's bookmark: a
// sequence of the jobs bucket's stream below which no job that is not
// final has its state record.
const KeySweepFrom = "from"

// KeyJobSpec is the key of a job's stored spec, for the jobs whose submit
// command cannot serve as one: an undecodable submission failed by its
// dead letter, and every job of a JOBS stream created as a work queue
// (before the commands were kept).
func KeyJobSpec(id int64) string { return strconv.FormatInt(id, 10) + ".spec" }

// PublishAsyncTimeout bounds the wait for an asynchronous publish's ack: a
// message sent just before a stream leader dies may never be answered,
// and its sender must learn that to send it again.
const PublishAsyncTimeout = 5 * time.Second

// KeyCallback is where a job's callback record lives in the jobs bucket.
func KeyCallback(id int64) string { return strconv.FormatInt(id, 10) + ".callback" }

// KeyHostResults matches every host result segment of a job.
func KeyHostResults(id int64) string { return strconv.FormatInt(id, 10) + ".*.*" }

// KeyEarlierResult is where a small job keeps the result of a unit's
// attempt that an operator's retry superseded, when that result carries
// its inline log (HostResult.Log): the job state holds only the latest
// attempt of each unit. "<id>.<step>.<unit>.<attempt>.log": no pattern
// of state keys or result segments matches it.
func KeyEarlierResult(id int64, step int, phase string, idx, attempt int) string {
	return fmt.Sprintf("%d.%d.%s.%d.log", id, step, UnitToken(phase, idx), attempt)
}

// Topology holds the tunables of the streams and buckets. The binary
// fills one from its configuration (Replicas, AckWait and TaskWait are
// settings there); every process of one system must agree on them.
type Topology struct {
	Replicas int
	// Dedupe is the JetStream duplicate window of the command stream: how
	// long an Idempotency-Key (or octans task name) is matched by the
	// stream itself, before the names bucket's claim.
	Dedupe time.Duration
	// WorkDedupe is the duplicate window of the task and result streams.
	// It only saves work: a task published again (a redone commit) is run
	// at most once per attempt by the agent's journal, and a report
	// folded again changes nothing, whenever either comes. It need only
	// cover a redo's usual delay (the ack wait); kept long, its message
	// ids cost the NATS server memory in proportion to the rate times the
	// window (~60 bytes each, two per host run).
	WorkDedupe time.Duration
	LogMaxAge  time.Duration
	EventAge   time.Duration
	LeaseTTL   time.Duration
	// ArtifactAge bounds how long distributed files stay in the store.
	ArtifactAge time.Duration
	TaskWait    time.Duration // AckWait of agents' task consumers
	AckWait     time.Duration // AckWait of the workers' consumers
	MaxDeliver  int
	// JobRetention is how long a job is kept in JetStream: its submit
	// command (which is its spec) in JOBS and its state and results in the
	// jobs bucket. A job still running when it nears this age is failed
	// (see RetentionMargin), so nothing of a live job ages out.
	JobRetention time.Duration
	// ResultPartitions is how many partitions the RESULTS stream is
	// created with (0: none, one consumer shared by every worker).
	ResultPartitions int
}

// RetentionMargin is how long before JobRetention a job that has not
// ended is failed.
const RetentionMargin = time.Hour

// DefaultTopology is the single-node setting.
func DefaultTopology() Topology {
	return Topology{
		Replicas:    1,
		Dedupe:      10 * time.Minute,
		WorkDedupe:  2 * time.Minute,
		LogMaxAge:   7 * 24 * time.Hour,
		EventAge:    7 * 24 * time.Hour,
		LeaseTTL:    10 * time.Second,
		ArtifactAge: 7 * 24 * time.Hour,
		TaskWait:    30 * time.Second,
		AckWait:     30 * time.Second,
		MaxDeliver:  10,

		JobRetention: 30 * 24 * time.Hour,

		ResultPartitions: 8,
	}
}

// Streams returns every stream's configuration.
func (t Topology) Streams() []jetstream.StreamConfig {
	wq := func(name, subj, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name: name, Description: desc, Subjects: []string{subj},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
			Replicas: t.Replicas, Duplicates: t.WorkDedupe, Discard: jetstream.DiscardOld,
			AllowDirect: true,
		}
	}
	jobsStream := wq(StreamJobs, subjCmdAll, "commands: submit, stop; the submit sequence is the job id, its message the job's spec")
	// The submit command is the job's record of its spec (read by
	// sequence), so the commands are kept, not removed once taken: the
	// workers' consumer acks them all the same.
	jobsStream.Retention, jobsStream.MaxAge, jobsStream.Duplicates = jetstream.LimitsPolicy, t.JobRetention, t.Dedupe
	results := wq(StreamResults, subjResAll, "agent and sweeper reports, per job")
	if t.ResultPartitions > 0 {
		results.SubjectTransform = resultTransform(t.ResultPartitions)
	}
	return []jetstream.StreamConfig{
		jobsStream,
		wq(StreamTasks, subjTaskAll, "per-agent tasks"),
		results,
		{
			Name: StreamLogs, Description: "execution output in chunks",
			Subjects: []string{subjLogAll}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, MaxAge: t.LogMaxAge,
			// Direct gets are answered by any replica, and one catching up
			// after a restart answers with a stale last chunk (a log that
			// never reads complete): with replicas, reads go to the leader.
			Duplicates: 2 * time.Minute, AllowDirect: t.Replicas == 1, Discard: jetstream.DiscardOld,
		},
		{
			Name: StreamEvents, Description: "CloudEvents for every state change",
			Subjects: []string{subjEvAll}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, MaxAge: t.EventAge,
			Duplicates: 2 * time.Minute, AllowDirect: true, Discard: jetstream.DiscardOld,
		},
	}
}

// Buckets returns every KV bucket's configuration.
func (t Topology) Buckets() []jetstream.KeyValueConfig {
	kv := func(name, desc string) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket: name, Description: desc, History: 1,
			Storage: jetstream.FileStorage, Replicas: t.Replicas,
		}
	}
	tokens := kv(BucketEnrolments, "enrolment tokens not yet used, by hash")
	tokens.TTL = MaxEnrolTTL + time.Hour
	leases := kv(BucketLeases, "leader leases")
	leases.TTL = t.LeaseTTL
	leases.Storage = jetstream.MemoryStorage
	jobs := kv(BucketJobs, "job states (CAS by revision) and host results")
	jobs.TTL = t.JobRetention
	return []jetstream.KeyValueConfig{
		jobs,
		kv(BucketNames, "unique names and idempotency keys"),
		kv(BucketAgents, "agent registry"),
		kv(BucketSweep, "the sweeper's bookmark: no job not yet final has its state below it"),
		kv(BucketDeadLetters, "messages that failed for good"),
		kv(BucketEnrolled, "agent enrolments: scope and hosts each agent may serve"),
		kv(BucketAccounts, "execution account aliases per scope"),
		tokens,
		kv(BucketIdentities, "API credentials: tokens and BlueKing apps, secrets hashed"),
		leases,
	}
}

// Artifacts is the object store of distributed files. Files a job uploads
// live under "job/<id>/…" and age out after ArtifactAge.
func (t Topology) Artifacts() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket: BucketArtifacts, Description: "files to distribute, deploy packages",
		Storage: jetstream.FileStorage, Replicas: t.Replicas, TTL: t.ArtifactAge,
		Compression: false,
	}
}

// CommandConsumer is the workers' shared consumer of JOBS.
func (t Topology) CommandConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerCommands, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.AckWait, MaxDeliver: t.MaxDeliver, MaxAckPending: 4096,
		FilterSubject: subjCmdAll,
		BackOff:       nil,
	}
}

// ResultConsumer is the workers' shared consumer of RESULTS. Reports are
// never dropped for being redelivered often: a result must reach the job.
func (t Topology) ResultConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerResults, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.AckWait, MaxDeliver: -1, MaxAckPending: 20000,
		FilterSubject: subjResAll,
	}
}

// IndexerConsumer is the log indexer's consumer of job logs.
func (t Topology) IndexerConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerIndexer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.AckWait, MaxDeliver: -1, MaxAckPending: 20000,
		FilterSubject: SubjJobLogs, DeliverPolicy: jetstream.DeliverAllPolicy,
		// the index needs a chunk's headers, never its lines
		HeadersOnly: true,
	}
}

// CallbackConsumer is the callback sender's consumer of job.finished
// events. Its ack wait is its own, not AckWait: a round of attempts takes
// up to two HTTP timeouts. A callback waiting for its next round is nakked
// with a delay, so deliveries are unlimited; only events published after
// the consumer first exists are delivered.
func (t Topology) CallbackConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerCallbacks, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Minute, MaxDeliver: -1, MaxAckPending: 256,
		FilterSubject: SubjJobFinished, DeliverPolicy: jetstream.DeliverNewPolicy,
	}
}

// AgentConsumerConfig is one agent's task consumer. AckWait is short and
// the agent sends in-progress acks while a task runs, so a dead agent's
// tasks are noticed quickly; slots bounds tasks in flight.
func (t Topology) AgentConsumerConfig(agent string, slots int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: AgentConsumer(agent), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.TaskWait, MaxDeliver: t.MaxDeliver, MaxAckPending: slots,
		FilterSubject: taskSubjectPrefix + DefaultPool + "." + agent + ".*",
	}
}

// PoolConsumerConfig is a simulator's one consumer for its whole pool.
func (t Topology) PoolConsumerConfig(pool string, maxPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: "pool-" + pool, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.TaskWait, MaxDeliver: t.MaxDeliver, MaxAckPending: maxPending,
		FilterSubject: taskSubjectPrefix + pool + ".*.*",
	}
}

// Ensure creates every stream and bucket that does not exist yet. Any
// process may call it at start; it never changes one that exists, so a
// process started with other settings (say, one replica instead of three)
// cannot reshape a running system. Change existing streams deliberately,
// with the nats CLI.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range t.Streams() {
		_, err := js.CreateStream(ctx, sc)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range t.Buckets() {
		_, err := js.CreateKeyValue(ctx, kc)
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("ensure bucket %s: %w", kc.Bucket, err)
		}
	}
	oc := t.Artifacts()
	if _, err := js.CreateObjectStore(ctx, oc); err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("ensure object store %s: %w", oc.Bucket, err)
	}
	return nil
}

// Missing names the first stream, bucket or object store that does not
// exist or cannot be read ("" when all do). Processes that may not create
// them (every identity but the admin's) wait for them with it. It reads
// stream infos only.
func (t Topology) Missing(ctx context.Context, js jetstream.JetStream) string {
	for _, sc := range t.Streams() {
		if _, err := js.Stream(ctx, sc.Name); err != nil {
			return sc.Name
		}
	}
	for _, kc := range t.Buckets() {
		if _, err := js.Stream(ctx, "KV_"+kc.Bucket); err != nil {
			return kc.Bucket
		}
	}
	if _, err := js.Stream(ctx, "OBJ_"+t.Artifacts().Bucket); err != nil {
		return t.Artifacts().Bucket
	}
	return ""
}
