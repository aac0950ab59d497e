package statuscache

// This file is how a host row is stored in a job's hosts hash. The field
// is the row's unit (hostField: "<step>.<unit token>"), the value
// "<rev>|<row>", where row is positional:
//
//	<status byte>|<since, unix ns>|<attempt>|<lines>|<cloud>:<ip>|<rest>
//
// (the cloud left out when it is 0), and rest is the JSON of what only a
// dispatched or finished row carries (agent, exit code, start and end,
// error), empty when there is none. A
// waiting row is then about 45 bytes, under Redis's listpack bound
// (hash-max-listpack-value, 64): the hosts hash of a queued job costs a
// third of what it did as JSON, where each value was ~150 bytes and the
// hash a hashtable. A value whose row starts with '{' is the whole row in
// JSON: what older fleetjob wrote, read as before.

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// rowRest is what a row carries beyond where it stands.
type rowRest struct {
	AgentID   string    `json:"a,omitempty"`
	ExitCode  *int      `json:"x,omitempty"`
	StartedAt time.Time `json:"s,omitzero"`
	EndedAt   time.Time `json:"e,omitzero"`
	Error     string    `json:"r,omitempty"`
}

// encodeRow is a row's stored form, without its revision.
func encodeRow(r schemas.HostRow) []byte {
	host := r.Host.IP // an IP: never holds '|'
	b := make([]byte, 0, 64)
	b = strconv.AppendUint(b, uint64(r.Status), 10)
	b = append(b, '|')
	if !r.Since.IsZero() {
		b = strconv.AppendInt(b, r.Since.UnixNano(), 10)
	}
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(r.Attempt), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(r.Lines), 10)
	b = append(b, '|')
	if r.Host.CloudID != 0 {
		b = strconv.AppendInt(b, r.Host.CloudID, 10)
	}
	b = append(b, ':')
	b = append(b, host...)
	b = append(b, '|')
	rest := rowRest{AgentID: r.AgentID, ExitCode: r.ExitCode, StartedAt: r.StartedAt, EndedAt: r.EndedAt, Error: r.Error}
	if rest != (rowRest{}) {
		j, _ := json.Marshal(rest)
		b = append(b, j...)
	}
	return b
}

// decodeRow reads a stored row back: field is its unit, value
// "<rev>|<row>".
func decodeRow(field, value string) (schemas.HostRow, bool) {
	var r schemas.HostRow
	_, v, ok := strings.Cut(value, "|")
	if !ok {
		return r, false
	}
	if strings.HasPrefix(v, "{") {
		return r, json.Unmarshal([]byte(v), &r) == nil
	}
	if r.Step, r.Phase, r.Index, ok = parseHostField(field); !ok {
		return r, false
	}
	p := strings.SplitN(v, "|", 6)
	if len(p) != 6 {
		return r, false
	}
	st, err := strconv.ParseUint(p[0], 10, 8)
	if err != nil {
		return r, false
	}
	r.Status = schemas.HostStatus(st)
	if p[1] != "" {
		ns, err := strconv.ParseInt(p[1], 10, 64)
		if err != nil {
			return r, false
		}
		r.Since = time.Unix(0, ns).UTC()
	}
	if r.Attempt, err = strconv.Atoi(p[2]); err != nil {
		return r, false
	}
	if r.Lines, err = strconv.Atoi(p[3]); err != nil {
		return r, false
	}
	cloud, ip, ok := strings.Cut(p[4], ":")
	if !ok {
		return r, false
	}
	r.Host.IP = ip
	if cloud != "" {
		if r.Host.CloudID, err = strconv.ParseInt(cloud, 10, 64); err != nil {
			return r, false
		}
	}
	if p[5] != "" {
		var rest rowRest
		if json.Unmarshal([]byte(p[5]), &rest) != nil {
			return r, false
		}
		r.AgentID, r.ExitCode, r.StartedAt, r.EndedAt, r.Error = rest.AgentID, rest.ExitCode, rest.StartedAt, rest.EndedAt, rest.Error
	}
	return r, true
}

// parseHostField reads hostField's step, phase and index back.
func parseHostField(f string) (step int, phase string, idx int, ok bool) {
	s, u, found := strings.Cut(f, ".")
	if !found {
		return 0, "", 0, false
	}
	step, err := strconv.Atoi(s)
	if phase, idx, ok = schemas.ParseUnitToken(u); !ok || err != nil {
		return 0, "", 0, false
	}
	return step, phase, idx, true
}
