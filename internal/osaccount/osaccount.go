// Package osaccount is an OS user as the agent's child processes run as
// it: scripts, and the helpers that read file sources and write
// destinations for file steps.
package osaccount

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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

// Worker does filesystem work as an identity: every call to Do runs on
// one OS thread whose filesystem credentials (fsuid, fsgid and
// supplementary groups, set with raw per-thread system calls) are the
// identity's, so the kernel checks each open, create, rename and
// symlink walk as it would for that user, and files and directories it
// creates belong to that user. The thread is never given back to the Go
// scheduler: when the worker is closed its goroutine exits still locked
// and the runtime ends the thread, so no other goroutine ever runs with
// those credentials (and new threads are never cloned from a locked one).
// Only the calls inside Do are affected; descriptors opened there can be
// read and written anywhere.
type Worker struct {
	reqs chan func()
	name string
}

// Start starts a worker for the identity; the agent's own identity (Cred
// nil) needs no thread, and its Do runs the function directly.
func (id Identity) Start() (*Worker, error) {
	if id.Cred == nil {
		return &Worker{name: id.User.Username}, nil
	}
	w := &Worker{reqs: make(chan func()), name: id.User.Username}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Worker
		if err := setFSCreds(id.Cred); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for fn := range w.reqs {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("act as %q: %w", id.User.Username, err)
	}
	return w, nil
}

// Do runs fn as the worker's identity and returns its error. A nil
// worker is the agent itself.
func (w *Worker) Do(fn func() error) error {
	if w == nil || w.reqs == nil {
		return fn()
	}
	errc := make(chan error, 1)
	w.reqs <- func() { errc <- fn() }
	return <-errc
}

// Name is the user the worker acts as; "" for a nil worker (the agent).
func (w *Worker) Name() string {
	if w == nil {
		return ""
	}
	return w.name
}

// Close ends the worker and its thread. Do must not be called after.
func (w *Worker) Close() {
	if w != nil && w.reqs != nil {
		close(w.reqs)
	}
}

// setFSCreds sets the calling thread's supplementary groups, fsgid and
// fsuid, and checks that they took. Raw system calls: the libc and Go
// wrappers of setgroups apply to every thread of the process.
func setFSCreds(c *syscall.Credential) error {
	groups := c.Groups
	if len(groups) == 0 {
		groups = []uint32{c.Gid}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(c.Gid), 0, 0)
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(c.Uid), 0, 0)
	// An id of -1 changes nothing and returns the current one.
	gid, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
	uid, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
	if uint32(gid) != c.Gid || uint32(uid) != c.Uid {
		return fmt.Errorf("filesystem ids are %d:%d, not %d:%d", uid, gid, c.Uid, c.Gid)
	}
	return nil
}
