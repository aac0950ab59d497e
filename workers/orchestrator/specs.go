package orchestrator

// This file holds the process's cache of job specs. A spec never changes
// and can always be read again (LoadSpec: the job's submit command in
// JOBS), so the cache holds the specs of the jobs being worked on, not of
// every job waiting: memory follows the jobs in flight, not the queue.

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/fleetjob/fleetjob/schemas"
)

// DefaultSpecs is how many specs a process keeps: several times the jobs
// a process has in flight at its fastest (a few thousand a second, each
// in flight for well under a second).
const DefaultSpecs = 4096

// Specs is a bounded, least-recently-used cache of job specs, shared by
// the workers of one process (a job's submit and its reports may be taken
// by different workers).
type Specs struct {
	c *lru.Cache[int64, *schemas.JobSpec]
}

// NewSpecs returns a cache of at most n specs (DefaultSpecs when n < 1).
func NewSpecs(n int) *Specs {
	if n < 1 {
		n = DefaultSpecs
	}
	c, _ := lru.New[int64, *schemas.JobSpec](n) // errors only for n < 1
	return &Specs{c: c}
}

func (s *Specs) get(id int64) (*schemas.JobSpec, bool) { return s.c.Get(id) }
func (s *Specs) put(id int64, spec *schemas.JobSpec)   { s.c.Add(id, spec) }
func (s *Specs) forget(id int64)                       { s.c.Remove(id) }
