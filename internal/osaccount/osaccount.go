// Package osaccount is an OS user as the agent's child processes run as
// it: scripts, and the helpers that read file sources and write
// destinations for file steps.
package osaccount

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// Identity is an OS user as a process runs as it.
type Identity struct {
	User   *user.User
	Cred   *syscall.Credential // nil: the agent's own (no switch)
	Groups []uint32
}

// Lookup resolves an OS user name to the credentials of a
// process that runs as it: uid, primary gid and every supplementary group
// (as id -G lists them). It is the agent's own account (Cred nil) when the
// agent already runs as that uid; switching to another needs root.
func Lookup(name string) (Identity, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Identity{}, fmt.Errorf("user %q does not exist on the host", name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return Identity{}, fmt.Errorf("user %q: uid %q / gid %q are not numbers", name, u.Uid, u.Gid)
	}
	id := Identity{User: u}
	if uint64(os.Geteuid()) == uid {
		return id, nil
	}
	if os.Geteuid() != 0 {
		return Identity{}, fmt.Errorf("the agent does not run as root and cannot act as %q", name)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return Identity{}, fmt.Errorf("user %q: groups: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return Identity{}, fmt.Errorf("user %q: group id %q is not a number", name, g)
		}
		id.Groups = append(id.Groups, uint32(n))
	}
	id.Cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: id.Groups}
	return id, nil
}

// Apply makes cmd run as the identity: credentials, HOME, USER and
// LOGNAME, and the working directory (the home directory when it is one,
// when the user owns it, else /: the agent's own directories are not the user's to enter).
func (id Identity) Apply(cmd *exec.Cmd) {
	if id.Cred == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = id.Cred
	cmd.Env = append(cmd.Env, "HOME="+id.User.HomeDir, "USER="+id.User.Username, "LOGNAME="+id.User.Username)
	cmd.Dir = "/"
	if fi, err := os.Stat(id.User.HomeDir); err == nil && fi.IsDir() {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == id.Cred.Uid {
			cmd.Dir = id.User.HomeDir
		}
	}
}
