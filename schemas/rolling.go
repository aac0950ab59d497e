package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Rolling modes (BlueKing's).
const (
	RollingPauseOnFailure = 1 // a batch with a failure waits for a person
	RollingIgnoreFailure  = 2 // failures do not stop the roll
	RollingConfirmEach    = 3 // every batch waits for confirmation
)

// Rolling runs a step's hosts in batches.
type Rolling struct {
	// Expr is BlueKing's rolling expression: space-separated batches of
	// "n" hosts, "n%" of the step's hosts, "+n" (each further batch n more
	// than the one before) or "*n" (each further batch n times the one
	// before). "100%" and the operators may only come last; the last term
	// repeats until every host has run.
	Expr string `json:"expr"`
	Mode int    `json:"mode"`
}

func (r *Rolling) validate(p string, fe *FieldErrors) {
	if _, err := parseRolling(r.Expr); err != nil {
		fe.Add(p+".expr", "%v", err)
	}
	switch r.Mode {
	case 0:
		r.Mode = RollingPauseOnFailure
	case RollingPauseOnFailure, RollingIgnoreFailure, RollingConfirmEach:
	default:
		fe.Add(p+".mode", "want 1 (pause on failure), 2 (ignore failures) or 3 (confirm each batch)")
	}
}

type rollTerm struct {
	kind byte // 'n' hosts, '%' percent, '+' add, '*' multiply
	v    int
}

func parseRolling(expr string) ([]rollTerm, error) {
	fields := strings.Fields(expr)
	if len(fields) == 0 {
		return nil, errors.New("empty rolling expression")
	}
	terms := make([]rollTerm, 0, len(fields))
	for i, f := range fields {
		last := i == len(fields)-1
		t := rollTerm{kind: 'n'}
		num := f
		switch {
		case strings.HasPrefix(f, "+"), strings.HasPrefix(f, "*"):
			t.kind, num = f[0], f[1:]
			if i == 0 {
				return nil, fmt.Errorf("%q: an operator needs a batch before it", f)
			}
			if !last {
				return nil, fmt.Errorf("%q: an operator may only be the last term", f)
			}
		case strings.HasSuffix(f, "%"):
			t.kind, num = '%', strings.TrimSuffix(f, "%")
		}
		v, err := strconv.Atoi(num)
		if err != nil || num == "" || num[0] == '+' || num[0] == '-' {
			return nil, fmt.Errorf("%q is not a batch (want n, n%%, +n or *n)", f)
		}
		switch {
		case v <= 0:
			return nil, fmt.Errorf("%q: batches may not be zero", f)
		case t.kind == '%' && v > 100:
			return nil, fmt.Errorf("%q: more than 100%%", f)
		case t.kind == '%' && v == 100 && !last:
			return nil, fmt.Errorf("%q: 100%% may only be the last term", f)
		}
		t.v = v
		terms = append(terms, t)
	}
	return terms, nil
}

// MaxRollingBatches bounds the batches of one step (BlueKing's limit).
const MaxRollingBatches = 500

// RollingBatches splits n hosts into batches and returns each batch's end
// (exclusive) host index; the last is n.
func RollingBatches(expr string, n int) ([]int, error) {
	terms, err := parseRolling(expr)
	if err != nil {
		return nil, err
	}
	size := func(t rollTerm) int {
		if t.kind == '%' {
			return max(1, (n*t.v+99)/100) // round up, at least one host
		}
		return t.v
	}
	var ends []int
	done, prev := 0, 0
	for i := 0; done < n; i++ {
		var s int
		switch {
		case i < len(terms) && (terms[i].kind == 'n' || terms[i].kind == '%'):
			s = size(terms[i])
		default:
			last := terms[len(terms)-1]
			// saturating: a huge step is the rest of the hosts, never an
			// overflow ("2 *4611686018427387904" made negative batches)
			switch last.kind {
			case '+':
				s = n
				if last.v < n-prev {
					s = prev + last.v
				}
			case '*':
				s = n
				if prev == 0 || last.v <= n/prev {
					s = prev * last.v
				}
			default:
				s = size(last)
			}
		}
		s = min(s, n-done)
		done += s
		prev = s
		ends = append(ends, done)
		if len(ends) > MaxRollingBatches {
			return nil, fmt.Errorf("%q makes more than %d batches of %d hosts", expr, MaxRollingBatches, n)
		}
	}
	return ends, nil
}
