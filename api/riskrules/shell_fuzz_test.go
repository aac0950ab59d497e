package riskrules

import (
	"errors"
	"strings"
	"testing"
)

// FuzzShellIndirection: hiding an argument behind what the shell resolves
// statically (a variable, a default, $(echo), the command in a variable,
// quotes, dot segments) never turns an intercepted command into an
// accepted one.
func FuzzShellIndirection(f *testing.F) {
	for _, c := range [][2]string{{"rm -rf", "/"}, {"rm -rf", "/etc"}, {"rm -fr", "/usr/"}, {"rm -r -f", "/*"}, {"find", "/ -delete"},
		{"cp /dev/zero", "/dev/sda"}, {"truncate -s0", "/etc/passwd"}, {"chmod -R 777", "/"}, {"rm -rf", "/tmp/build"}, {"mkfs.ext4", "/dev/sdb1"}} {
		f.Add(c[0], c[1])
	}
	e, err := New(Defaults())
	if err != nil {
		f.Fatal(err)
	}
	safe := func(s string) bool {
		return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" /._-=*", r))
		})
	}
	f.Fuzz(func(t *testing.T, command, arg string) {
		if !safe(command) || !safe(arg) || strings.ContainsAny(arg, " *") || strings.HasPrefix(strings.TrimSpace(command), "-") {
			return
		}
		direct := command + " " + arg
		if _, err := e.Check("bash", direct); !errors.Is(err, ErrIntercepted) {
			return
		}
		name, rest, _ := strings.Cut(strings.TrimSpace(command), " ")
		dotted := arg
		if strings.HasPrefix(arg, "/") {
			dotted = "/." + arg
		}
		for _, hidden := range []string{
			"x=" + arg + "; " + command + " $x",
			"x='" + arg + "'\n" + command + ` "$x"`,
			command + " ${UNSET_X:-" + arg + "}",
			command + ` "$(echo ` + arg + `)"`,
			"r=" + name + "; $r " + rest + " " + arg,
			command + " '" + arg + "'",
			command + " " + dotted,
		} {
			if _, err := e.Check("bash", hidden); !errors.Is(err, ErrIntercepted) {
				t.Errorf("%q is intercepted, %q is not", direct, hidden)
			}
		}
	})
}
