package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockName is the lock file a process holds in its data directory.
const lockName = "fleetjob.lock"

// lockDir creates dir and takes an exclusive flock on its lock file for
// the life of the process, so that a second fleetjob started on the same
// directory stops at once instead of opening the same store (two NATS
// servers on one JetStream store corrupt it). The holder writes its pid in
// the file so a refusal can name it. The kernel drops the lock when the
// process exits, however it exits; unlock drops it sooner. The file stays:
// removing it would let a third process lock a new file beside a holder
// of the old one. flag is how the user chooses another directory.
func lockDir(dir, flag string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	path := filepath.Join(abs, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600) // close-on-exec: scripts never inherit it
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := lockHolder(f)
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock data directory %s: %w", abs, err)
		}
		return nil, fmt.Errorf("data directory %s is in use by %s, which holds its lock file %s: stop that process, or choose another directory with %s", abs, holder, lockName, flag)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// lockHolder names the process that holds f, as far as it is known.
func lockHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
		return fmt.Sprintf("another fleetjob process (pid %d)", pid)
	}
	return "another fleetjob process"
}
