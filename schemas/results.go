package schemas

// This file holds the result subjects: who reports on which subject, how a
// subject is read back, and the RESULTS stream's partitions by job.

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Result subjects carry who reports: an agent's reports are on
// fleetjob.result.<pool>.<agent>.<job>, which its credentials allow for its
// own pool and id only; the workers' sweeper kicks a job on
// fleetjob.result.sweeper.<job>, one token shorter, a shape no agent can
// publish on.
const (
	resultSubjectPrefix = "fleetjob.result."
	sweeperToken        = "sweeper"
)

// ResultSubject is where an agent (of a pool) publishes reports about one job.
func ResultSubject(pool, agent string, job int64) string {
	return resultSubjectPrefix + pool + "." + agent + "." + strconv.FormatInt(job, 10)
}

// SweeperResultSubject is where the workers' sweeper kicks one job.
func SweeperResultSubject(job int64) string {
	return resultSubjectPrefix + sweeperToken + "." + strconv.FormatInt(job, 10)
}

// Partitioned results. A RESULTS stream created with partitions stores an
// agent's report fleetjob.result.<pool>.<agent>.<job> as
// fleetjob.result.<p>.<pool>.<agent>.<job>, p = ResultPartition(job): the
// stream's subject transform puts it there as the report is stored, so
// agents publish as before and cannot choose p. Each partition has a
// durable consumer, and one worker at a time consumes it (see the
// orchestrator's partitions.go), so one job's reports are folded by one
// worker. The sweeper kicks a job of a partitioned stream directly on
// fleetjob.result.<p>.sweeper.~.<job>: six tokens, a shape no agent can
// publish on (and "~" is no agent id), which the transform (it takes
// five) leaves alone.
const sweeperAgent = "~"

// ResultPartition is the partition of a job's reports among n: the NATS
// server's partition() mapping (FNV-1a of the job token, modulo n), so a
// kick lands in the partition the job's reports do.
func ResultPartition(job int64, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(strconv.FormatInt(job, 10)))
	return int(h.Sum32() % uint32(n))
}

// StoredResultSubject is the subject an agent's report on
// ResultSubject(pool, agent, job) is stored under in a RESULTS stream of n
// partitions (n = 0: the same).
func StoredResultSubject(pool, agent string, job int64, n int) string {
	if n == 0 {
		return ResultSubject(pool, agent, job)
	}
	return resultSubjectPrefix + strconv.Itoa(ResultPartition(job, n)) + "." + pool + "." + agent + "." + strconv.FormatInt(job, 10)
}

// PartitionedSweeperResultSubject is SweeperResultSubject in a RESULTS
// stream of n partitions.
func PartitionedSweeperResultSubject(job int64, n int) string {
	return resultSubjectPrefix + strconv.Itoa(ResultPartition(job, n)) + "." + sweeperToken + "." + sweeperAgent + "." + strconv.FormatInt(job, 10)
}

// resultTransform is the RESULTS stream's subject transform into n
// partitions.
func resultTransform(n int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      resultSubjectPrefix + "*.*.*",
		Destination: fmt.Sprintf("%s{{partition(%d,3)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}", resultSubjectPrefix, n),
	}
}

// ResultPartitionsOf reads the partition count back from a RESULTS
// stream's configuration: 0 when it has none (created unpartitioned).
func ResultPartitionsOf(cfg jetstream.StreamConfig) int {
	st := cfg.SubjectTransform
	if st == nil {
		return 0
	}
	for n := 1; n <= MaxResultPartitions; n++ {
		if *st == *resultTransform(n) {
			return n
		}
	}
	return 0
}

// MaxResultPartitions bounds topology.result_partitions.
const MaxResultPartitions = 256

// AgentResultSubjects matches every report an agent of pool may publish:
// with agent "*", any agent of the pool (a simulator's).
func AgentResultSubjects(pool, agent string) string {
	return resultSubjectPrefix + pool + "." + agent + ".*"
}

// ResultFrom says who published on a result subject, read back from it.
type ResultFrom struct {
	Job int64
	// Pool and Agent are the reporting agent's; both empty for the sweeper.
	Pool, Agent string
	// Sweeper is true for the workers' own kicks.
	Sweeper bool
}

// ParseResultSubject reads a result subject back.
func ParseResultSubject(subj string) (ResultFrom, error) {
	rest, ok := strings.CutPrefix(subj, resultSubjectPrefix)
	if !ok {
		return ResultFrom{}, fmt.Errorf("%q is not a result subject", subj)
	}
	p := strings.Split(rest, ".")
	if len(p) == 4 { // partitioned: drop the partition
		if _, err := strconv.ParseUint(p[0], 10, 16); err != nil {
			return ResultFrom{}, fmt.Errorf("%q is not a result subject", subj)
		}
		p = p[1:]
		if p[0] == sweeperToken && p[1] == sweeperAgent { // not an agent id
			p = []string{sweeperToken, p[2]}
		}
	}
	var f ResultFrom
	switch {
	case len(p) == 2 && p[0] == sweeperToken:
		f.Sweeper = true
	case len(p) == 3 && p[0] != "" && ValidAgentID(p[1]):
		f.Pool, f.Agent = p[0], p[1]
	default:
		return ResultFrom{}, fmt.Errorf("%q is not a result subject", subj)
	}
	id, err := strconv.ParseInt(p[len(p)-1], 10, 64)
	if err != nil {
		return ResultFrom{}, fmt.Errorf("%q is not a result subject: %w", subj, err)
	}
	f.Job = id
	return f, nil
}

// JobOfResultSubject reads the job id back from a result subject.
func JobOfResultSubject(subj string) (int64, error) {
	f, err := ParseResultSubject(subj)
	return f.Job, err
}

// PartitionConsumer is the workers' consumer of partition k of a
// partitioned RESULTS stream; one worker at a time consumes it.
func (t Topology) PartitionConsumer(k int) jetstream.ConsumerConfig {
	c := t.ResultConsumer()
	c.Durable = PartitionConsumerName(k)
	c.FilterSubject = resultSubjectPrefix + strconv.Itoa(k) + ".>"
	c.MaxAckPending = PartitionAckPending
	return c
}

// PartitionAckPending bounds the reports of one partition delivered and
// not yet folded. A partition's big jobs can hold that many between them
// while they wait for their commits, and what comes after them in the
// partition is delivered only as they are acknowledged: at 4,096 (one
// commit's worth, maxFold) a one-host job's report waited behind ~12,000
// of ten 20,000-host jobs' reports for up to 10 s (p99 of the one-host
// probe 14-16 s; 3.1-4.9 s at 16,384; 1.3-2.6 s at 32,768). At 32,768 the
// consumer keeps delivering past a big job's backlog, so a small job's
// report reaches its own queue (and its own commit) at once. What a
// worker holds for it is ~300 bytes a report, ~10 MB a partition; a
// report is at most ~2 KiB (its inline log at most MaxInlineLog), so 64
// MB a partition at worst.
const PartitionAckPending = 32768

// PartitionConsumerName is the durable name of partition k's consumer.
func PartitionConsumerName(k int) string { return fmt.Sprintf("%s-p%d", ConsumerResults, k) }

// PartitionLeaseKey is the leases bucket's key of partition k's owner (its
// value is the owning worker's name).
func PartitionLeaseKey(k int) string { return "part." + strconv.Itoa(k) }
