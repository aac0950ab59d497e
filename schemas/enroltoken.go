package schemas

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BucketEnrolments holds the enrolment tokens not yet used, by the
// SHA-256 of the token (hex); only the API reads or writes it. A token is
// deleted, compare-and-set on its revision, when an agent uses it.
const BucketEnrolments = "enrolments"

// MaxEnrolTTL is the longest an enrolment token may be used for; the
// tokens bucket drops entries older than that, used or not.
const MaxEnrolTTL = 7 * 24 * time.Hour

// EnrolmentGrant is what an enrolment token allows the agent that uses it:
// the Enrolment it will get, less the keys. The token itself is never
// stored, only its hash (the grant's key).
type EnrolmentGrant struct {
	// Agent, when set, is the only agent id the token enrols.
	Agent  string            `json:"agent,omitempty"`
	Scope  Scope             `json:"scope"`
	Labels map[string]string `json:"labels,omitempty"`
	Hosts  []Host            `json:"hosts,omitempty"`
	// HostIDs are the CMDB host ids (bk_host_id) it may claim.
	HostIDs []int64 `json:"host_ids,omitempty"`
	// Ranges and Simulator are for load simulators (agent --simulate):
	// the pool's identities are "<agent>-<i>" and may serve the hosts of
	// Ranges.
	Ranges    []HostRange `json:"ranges,omitempty"`
	Simulator bool        `json:"simulator,omitempty"`
	Expires   time.Time   `json:"expires"`
	Created   time.Time   `json:"created"`
	By        string      `json:"by,omitempty"`
}

// HostRange is a range of IPs, First to Last inclusive, in one cloud area.
type HostRange struct {
	CloudID int64  `json:"cloud_id"`
	First   string `json:"first"`
	Last    string `json:"last"`
}

// ParseHostRange reads "[cloud:]first-last", e.g. "0:10.200.0.1-10.200.39.16".
func ParseHostRange(s string) (HostRange, error) {
	var r HostRange
	rest := s
	if c, tail, ok := strings.Cut(s, ":"); ok && !strings.Contains(tail, ":") {
		id, err := strconv.ParseInt(c, 10, 64)
		if err != nil || id < 0 {
			return HostRange{}, fmt.Errorf("%q: the cloud id is not a whole number", s)
		}
		r.CloudID, rest = id, tail
	}
	first, last, ok := strings.Cut(rest, "-")
	if !ok {
		return HostRange{}, fmt.Errorf("%q is not a range: want [cloud:]first-last", s)
	}
	r.First, r.Last = first, last
	return r, r.Validate()
}

// Validate checks both ends are IPs of one family, First not after Last.
func (r HostRange) Validate() error {
	a, err1 := netip.ParseAddr(r.First)
	b, err2 := netip.ParseAddr(r.Last)
	if err1 != nil || err2 != nil || a.Is4() != b.Is4() || b.Less(a) || r.CloudID < 0 {
		return fmt.Errorf("%d:%s-%s is not a range of IPs, first to last", r.CloudID, r.First, r.Last)
	}
	return nil
}

// Contains reports whether h is in the range.
func (r HostRange) Contains(h Host) bool {
	ip, err := netip.ParseAddr(h.IP)
	a, err1 := netip.ParseAddr(r.First)
	b, err2 := netip.ParseAddr(r.Last)
	if err != nil || err1 != nil || err2 != nil || h.CloudID != r.CloudID || ip.Is4() != a.Is4() {
		return false
	}
	return !ip.Less(a) && !b.Less(ip)
}

// SimulatedOf is the simulator pool an identity belongs to by its enrolment
// rules: a simulated claim "<pool>-<i>" is judged by the enrolment of its
// pool, which must be a Simulator enrolment.
func SimulatedOf(a AgentInfo) (pool string, ok bool) {
	if !a.Simulated || a.Pool == "" || !strings.HasPrefix(a.ID, a.Pool+"-") {
		return "", false
	}
	return a.Pool, true
}
