package api

import (
	"context"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// The interfaces below are what the core and the surfaces call, declared
// here by their consumer. The composition root (internal/roles) adapts the
// status cache, the log index, the callback records and JetStream to them.

// Publisher turns a command into one JetStream message; the stream
// sequence of the publish ack comes back, and dup says the message id had
// been seen within the dedupe window (the sequence is then the original's).
type Publisher interface {
	Publish(ctx context.Context, subject string, body []byte, msgID string) (seq uint64, dup bool, err error)
}

// Claims is the names bucket: unique task names and idempotency keys, each
// held by a job id and, for idempotency keys, the fingerprint of the
// request that took it.
type Claims interface {
	// Claim records key → (id, fingerprint) unless key is already claimed;
	// it returns the holder of the claim.
	Claim(ctx context.Context, key string, id int64, fingerprint string) (holder ClaimHolder, err error)
	Lookup(ctx context.Context, key string) (holder ClaimHolder, found bool, err error)
}

// ClaimHolder is the job that holds a claim and the fingerprint of the
// request that took it (empty for claims that have none).
type ClaimHolder struct {
	ID          int64
	Fingerprint string
}

// JobReader reads one job: its summary, its spec and state, its host rows
// and its stored host results.
type JobReader interface {
	Job(ctx context.Context, id int64) (schemas.JobSummary, error)
	Load(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, error)
	Hosts(ctx context.Context, id int64) ([]schemas.HostRow, error)
	// Results returns the stored results of some units of a step.
	Results(ctx context.Context, id int64, step int, phase string, idx []int) (map[int]schemas.HostResult, error)
	// UploadResults returns every upload unit's stored result of a file step.
	UploadResults(ctx context.Context, id int64, step, units int) (map[int]schemas.HostResult, error)
}

// JobSearch finds jobs.
type JobSearch interface {
	List(ctx context.Context, q JobQuery) ([]schemas.JobSummary, int, error)
	// HostJobs returns up to limit ids of jobs that targeted a host, newest first.
	HostJobs(ctx context.Context, h schemas.Host, limit int) ([]int64, error)
	// JobsBefore returns up to n summaries of jobs with ids below below,
	// newest first, and the id to continue below (0 at the end).
	JobsBefore(ctx context.Context, below int64, n int) ([]schemas.JobSummary, int64, error)
	Facts(ctx context.Context, ids []int64) (map[int64]JobFacts, error)
	// JobsOnHosts says which of ids targeted any of hosts.
	JobsOnHosts(ctx context.Context, hosts []schemas.Host, ids []int64) (map[int64]bool, error)
}

// JobQuery selects and orders jobs.
type JobQuery struct {
	Status string // one job status word, or empty
	Name   string // exact name, or empty
	Sort   string // id (default), created_at or updated_at
	Desc   bool
	Page   int // from 1
	Size   int
	// Scopes, when set, keeps only jobs of these scopes ("biz:2").
	Scopes []string
}

// JobFacts are the small facts of a job's spec that list filters need
// beyond its summary.
type JobFacts struct {
	Scope     *schemas.Scope
	StepTypes []string
	// Extra holds the spec's extra fields whose values are short.
	Extra map[string]string
}

// JobQueuer caches a job the API has just accepted, before a worker takes
// it, so a read right after the submit finds it.
type JobQueuer interface {
	Queued(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState)
}

// LogReader reads a range of one execution's log lines.
type LogReader interface {
	Read(ctx context.Context, ref schemas.LogRef, from, limit int) (schemas.LogPage, error)
}

// CallbackReader reads a job's callback delivery record.
type CallbackReader interface {
	Callback(ctx context.Context, id int64) (schemas.CallbackRecord, bool, error)
}

// DeadLetterReader lists the messages that failed for good.
type DeadLetterReader interface {
	DeadLetters(ctx context.Context) ([]schemas.DeadLetter, error)
}

// AgentLister lists the registered agents.
type AgentLister interface {
	All() []schemas.AgentInfo
	TTL() time.Duration
}

// Checker reports whether a dependency answers.
type Checker func(ctx context.Context) error
