package agent

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/fleetjob/fleetjob/internal/osaccount"
)

// Execution accounts on the host. The API resolved every account alias
// to an OS user before the job was queued; the agent runs each script as
// that user, with its uid, primary gid and supplementary groups, and
// moves files as that user through a child process (see
// workers/filexfer's account.go). An empty account is the agent's own.

// scriptPath is how an interpreter names the script: descriptor 3 of its
// own process, inherited from the agent.
const scriptPath = "/dev/fd/3"

// scriptFD puts a script's content into a sealed memory file and returns
// it: no file on disk to clean up, nothing a directory's permissions keep
// from the account the script runs as (a memfd is mode 0777, so opening
// /dev/fd/3 works for any uid), nothing other users can open (only the
// script's own processes hold it), and nothing can change it once sealed.
func scriptFD(execID, content string) (*os.File, error) {
	fd, err := unix.MemfdCreate("fleetjob-"+execID, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "fleetjob-script-"+execID)
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return nil, fmt.Errorf("write script: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal script: %w", err)
	}
	return f, nil
}

// runAs makes cmd run as the OS user name.
func runAs(cmd *exec.Cmd, name string) error {
	id, err := osaccount.Lookup(name)
	if err != nil {
		return err
	}
	id.Apply(cmd)
	return nil
}
