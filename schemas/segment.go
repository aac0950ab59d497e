package schemas

import (
	"fmt"
	"slices"
)

// A larger job's final host results live in segments: one key of the jobs
// bucket per ResultSegment units of a step's phase, written by
// compare-and-set like the job state. A commit that ends thousands of
// hosts (20,000 expiring agent_offline) writes tens of keys, not
// thousands, and a segment whose write fails is retried alone.

// ResultSegment is how many units' results share a key. A segment of
// results is at most ~60 KiB: small enough to rewrite when a few of its
// hosts finish, large enough that a 20,000-host step has 79.
const ResultSegment = 256

// SegmentOf is the segment of unit idx.
func SegmentOf(idx int) int { return idx / ResultSegment }

// KeyResultSegment is the key of segment seg of a step's targets (phase
// "") or upload units (PhaseUpload): "<id>.<step>.g<seg>" or
// "<id>.<step>.ug<seg>", matched by KeyHostResults.
func KeyResultSegment(id int64, step int, phase string, seg int) string {
	prefix := "g"
	if phase == PhaseUpload {
		prefix = "ug"
	}
	return fmt.Sprintf("%d.%d.%s%d", id, step, prefix, seg)
}

// KeyResultSegmentOf is the key of the segment holding unit idx.
func KeyResultSegmentOf(id int64, step int, phase string, idx int) string {
	return KeyResultSegment(id, step, phase, SegmentOf(idx))
}

// ResultSegmentValue is a segment's stored value: its units' latest
// results, by index, and the earlier attempts' results that carry an
// inline log (HostResult.Log), which a retry superseded.
type ResultSegmentValue struct {
	Results []HostResult `json:"results"`
	// Earlier keeps, oldest first, a superseded result that carries its
	// attempt's log (the agent stored it nowhere else): the log reader
	// serves it for that attempt. At most MaxSegmentEarlier of them: past
	// that the oldest go.
	Earlier []HostResult `json:"earlier,omitempty"`
}

// MaxSegmentEarlier bounds a segment's earlier results with logs: four
// retries of all its units, ≤ 1 MiB of logs at MaxInlineLog each.
const MaxSegmentEarlier = 4 * ResultSegment

// Merge records rs (all of this segment), each replacing the result of
// its unit unless that one is of a later attempt; a replaced result of an
// earlier attempt that carries a log moves to Earlier. It reports whether
// anything changed.
func (v *ResultSegmentValue) Merge(rs []HostResult) bool {
	changed := false
	for _, r := range rs {
		i := slices.IndexFunc(v.Results, func(o HostResult) bool { return o.Index == r.Index })
		switch {
		case i < 0:
			v.Results = append(v.Results, r)
			changed = true
		case v.Results[i].Attempt <= r.Attempt && !sameResult(v.Results[i], r):
			if old := v.Results[i]; old.Log != nil && old.Attempt < r.Attempt {
				v.Earlier = append(v.Earlier, old)
				if n := len(v.Earlier) - MaxSegmentEarlier; n > 0 {
					v.Earlier = slices.Delete(v.Earlier, 0, n)
				}
			}
			v.Results[i] = r
			changed = true
		}
	}
	return changed
}

// Attempt returns unit idx's result of one attempt: its latest, or an
// earlier one kept for its log.
func (v *ResultSegmentValue) Attempt(idx, attempt int) (HostResult, bool) {
	if r, ok := v.Find(idx); ok && r.Attempt == attempt {
		return r, true
	}
	for _, r := range v.Earlier {
		if r.Index == idx && r.Attempt == attempt {
			return r, true
		}
	}
	return HostResult{}, false
}

func sameResult(a, b HostResult) bool {
	return a.Attempt == b.Attempt && a.Status == b.Status && a.EndedAt.Equal(b.EndedAt) && a.Lines == b.Lines && a.Error == b.Error &&
		a.AgentID == b.AgentID && ((a.ExitCode == nil) == (b.ExitCode == nil)) && (a.ExitCode == nil || *a.ExitCode == *b.ExitCode)
}

// Find returns unit idx's result.
func (v *ResultSegmentValue) Find(idx int) (HostResult, bool) {
	for _, r := range v.Results {
		if r.Index == idx {
			return r, true
		}
	}
	return HostResult{}, false
}
