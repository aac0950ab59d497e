package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestProtectedDestination(t *testing.T) {
	dir := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toEtc := link("etc-link", "/etc")
	toApp := link("app-link", filepath.Join(dir, "app"))
	dangling := link("dangling", "/etc/../etc")
	relative := link("relative", "../../../../../../../../etc")
	for _, c := range []struct {
		name, dest string
		files      []string
		want       string // in the error; "" for none
	}{
		{"etc itself", "/etc/", nil, "destination /etc is protected"},
		{"critical file by name", "/etc", []string{"passwd"}, "protected"},
		{"symlink into etc", toEtc, []string{"app.conf"}, "resolves to /etc: file step: destination /etc is protected"},
		{"symlink into etc, dot dot", toEtc + "/../etc-link/", nil, "resolves to /etc"},
		{"relative symlink to etc", relative, nil, "resolves to /etc"},
		{"symlink with dot dot", dangling, nil, "resolves to /etc"},
		{"sshd_config through a symlink", toEtc + "/ssh", []string{"sshd_config"}, "resolves to /etc/ssh"},
		{"below a symlink to etc", toEtc + "/myapp", []string{"passwd"}, ""},
		{"missing app dir through a symlink", toApp + "/conf", []string{"a.conf"}, ""},
		{"temp dir", dir, []string{"shadow"}, ""},
		{"not yet created", filepath.Join(dir, "new", "deeper"), []string{"x"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var files []schemas.FileEntry
			for _, n := range c.files {
				files = append(files, schemas.FileEntry{Name: n})
			}
			err := protectedDestination(c.dest, files)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s refused: %v", c.dest, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("%s: got %v, want %q", c.dest, err, c.want)
			}
		})
	}
}
