package riskrules

import (
	"path"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// Shell scripts are also checked as the shell would run them: each simple
// command, parsed with mvdan.cc/sh, is matched again with what can be
// known without running anything resolved. Variables assigned a constant
// (x=/; rm -rf $x), ${X:-/} of a variable never assigned, $(echo /) and
// command names held in variables (r=rm; $r -rf /) are expanded, quotes
// removed, and absolute paths cleaned (/./ and // are /). What depends on
// the host (other command output, the environment) stays as written.

// shellCommand is one simple command as it would run.
type shellCommand struct {
	line int    // 1-based line of its first word
	text string // its words, resolved, joined by spaces
}

// shellCommands lists the simple commands of a bash or sh script, resolved
// as far as is known statically. A script that does not parse has none
// (the line rules still apply to it).
func shellCommands(language, src string) []shellCommand {
	variant := syntax.LangBash
	if language == "sh" {
		variant = syntax.LangPOSIX
	}
	f, err := syntax.NewParser(syntax.Variant(variant)).Parse(strings.NewReader(src), "")
	if err != nil {
		return nil
	}
	r := resolver{vars: map[string]string{}}
	var out []shellCommand
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.Assign:
			r.assign(n)
		case *syntax.CallExpr:
			if len(n.Args) == 0 {
				return true
			}
			words := make([]string, 0, len(n.Args))
			for _, w := range n.Args {
				words = append(words, r.word(w))
			}
			out = append(out, shellCommand{line: int(n.Args[0].Pos().Line()), text: strings.Join(words, " ")})
		}
		return true
	})
	return out
}

// resolver knows the variables assigned constants so far (in source
// order: flow is not followed, which for a guard rail is the right side to
// err on).
type resolver struct {
	vars map[string]string
}

func (r *resolver) assign(a *syntax.Assign) {
	if a.Name == nil || a.Array != nil || a.Index != nil || a.Append {
		return
	}
	if a.Value == nil {
		r.vars[a.Name.Value] = ""
		return
	}
	if v, ok := r.constant(a.Value); ok {
		r.vars[a.Name.Value] = v
	} else {
		delete(r.vars, a.Name.Value) // unknown from here on
	}
}

// word resolves a word as far as possible; what cannot be resolved keeps
// its source text. Absolute paths are cleaned.
func (r *resolver) word(w *syntax.Word) string {
	var b strings.Builder
	for _, p := range w.Parts {
		b.WriteString(r.part(p))
	}
	s := b.String()
	if strings.HasPrefix(s, "/") && !strings.ContainsAny(s, "$`") {
		trail := strings.HasSuffix(s, "/") && len(s) > 1
		s = path.Clean(s)
		if trail && s != "/" {
			s += "/"
		}
	}
	return s
}

// constant is a word's value when it is known without running anything.
func (r *resolver) constant(w *syntax.Word) (string, bool) { return r.joined(w.Parts) }

// joined is the value of word parts when every one is known.
func (r *resolver) joined(parts []syntax.WordPart) (string, bool) {
	var b strings.Builder
	for _, p := range parts {
		v, ok := r.known(p)
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

func (r *resolver) part(p syntax.WordPart) string {
	if v, ok := r.known(p); ok {
		return v
	}
	return source(p)
}

// known resolves one part of a word, if it can be.
func (r *resolver) known(p syntax.WordPart) (string, bool) {
	switch p := p.(type) {
	case *syntax.Lit:
		return unescape(p.Value), true
	case *syntax.SglQuoted:
		return p.Value, true
	case *syntax.DblQuoted:
		return r.joined(p.Parts)
	case *syntax.ParamExp:
		return r.param(p)
	case *syntax.CmdSubst:
		return r.echo(p)
	}
	return "", false
}

// param resolves $x, ${x} and ${x:-word} / ${x-word} / ${x:=word}.
func (r *resolver) param(p *syntax.ParamExp) (string, bool) {
	if p.Param == nil || p.Excl || p.Length || p.Width || p.Index != nil || p.Slice != nil || p.Repl != nil || p.Names != 0 {
		return "", false
	}
	v, set := r.vars[p.Param.Value]
	if p.Exp == nil {
		return v, set
	}
	orNull := p.Exp.Op == syntax.DefaultUnsetOrNull || p.Exp.Op == syntax.AssignUnsetOrNull
	switch p.Exp.Op {
	case syntax.DefaultUnset, syntax.DefaultUnsetOrNull, syntax.AssignUnset, syntax.AssignUnsetOrNull:
		if set && (v != "" || !orNull) {
			return v, true
		}
		// unset (or null): the default is what runs, as nothing set it
		if p.Exp.Word == nil {
			return "", true
		}
		return r.constant(p.Exp.Word)
	}
	return "", false
}

// echo resolves $(echo words) and `echo words` with constant words.
func (r *resolver) echo(c *syntax.CmdSubst) (string, bool) {
	if len(c.Stmts) != 1 {
		return "", false
	}
	call, ok := c.Stmts[0].Cmd.(*syntax.CallExpr)
	if !ok || len(call.Args) == 0 || len(c.Stmts[0].Redirs) > 0 {
		return "", false
	}
	if name, ok := r.constant(call.Args[0]); !ok || (name != "echo" && name != "printf") {
		return "", false
	}
	words := make([]string, 0, len(call.Args)-1)
	for _, w := range call.Args[1:] {
		v, ok := r.constant(w)
		if !ok || strings.HasPrefix(v, "-") || strings.Contains(v, "%") {
			return "", false
		}
		words = append(words, v)
	}
	return strings.Join(words, " "), true
}

// unescape removes the backslashes of an unquoted literal.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// source prints a word part back as written.
func source(p syntax.WordPart) string {
	var b strings.Builder
	_ = syntax.NewPrinter().Print(&b, &syntax.Word{Parts: []syntax.WordPart{p}})
	return b.String()
}
