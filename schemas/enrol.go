package schemas

import (
	"fmt"
	"strings"
	"time"
)

// Enrolment is what an admin allowed one agent when it enrolled. Only the
// API writes it (agents have no access to its bucket), so it is the record
// the registry, the API and the workers trust for an agent's scope and for
// the hosts it may serve; the agent's own registry entry is only a claim.
type Enrolment struct {
	Agent string `json:"agent"`
	// Scope is the business the agent's hosts belong to. A zero Scope is
	// no business: only admins may target such an agent.
	Scope  Scope             `json:"scope"`
	Labels map[string]string `json:"labels,omitempty"`
	// Hosts are the (cloud_id, ip) the agent may claim; a claim to any
	// other host is refused by the registry.
	Hosts []Host `json:"hosts"`
	// Ranges are further hosts it may claim, by IP range; with Simulator
	// set the enrolment is a load simulator pool's (agent --simulate),
	// whose identities "<agent>-<i>" may claim hosts in Ranges.
	Ranges    []HostRange `json:"ranges,omitempty"`
	Simulator bool        `json:"simulator,omitempty"`
	// HostIDs are the CMDB host ids (BlueKing bk_host_id) the agent may
	// claim; any other id it claims is ignored.
	HostIDs []int64 `json:"host_ids,omitempty"`
	// NKey is the public user key its NATS credentials were issued to.
	NKey string `json:"nkey,omitempty"`
	// XKey is its public curve key: sensitive values are sealed to it.
	XKey     string    `json:"xkey,omitempty"`
	Enrolled time.Time `json:"enrolled"`
	// Revoked is set when an admin revoked the agent.
	Revoked *time.Time `json:"revoked,omitempty"`
}

// Allows reports whether the enrolment lets its agent serve h.
func (e Enrolment) Allows(h Host) bool {
	if e.Revoked != nil {
		return false
	}
	for _, x := range e.Hosts {
		if x == h {
			return true
		}
	}
	for _, r := range e.Ranges {
		if r.Contains(h) {
			return true
		}
	}
	return false
}

// String is the scope as BlueKing writes it in permissions: "biz:2",
// "biz_set:9"; "" for no scope.
func (s Scope) String() string {
	if s.Type == "" {
		return ""
	}
	return s.Type + ":" + s.ID
}

// ParseScope reads "biz:<id>" or "biz_set:<id>".
func ParseScope(s string) (Scope, error) {
	typ, id, ok := strings.Cut(s, ":")
	if !ok || (typ != "biz" && typ != "biz_set") || id == "" || strings.ContainsAny(id, " .*>:") {
		return Scope{}, fmt.Errorf("%q is not a scope: want biz:<id> or biz_set:<id>", s)
	}
	return Scope{Type: typ, ID: id}, nil
}
