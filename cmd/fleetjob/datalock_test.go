package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
)

// runMainEnv makes the test binary run fleetjob's main instead of the
// tests, so the lock tests start real fleetjob processes.
const runMainEnv = "FLEETJOB_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a fleetjob process started from the test binary.
type child struct {
	cmd     *exec.Cmd
	done    chan struct{}
	running chan struct{} // closed when serve prints its banner
	mu      sync.Mutex
	stderr  bytes.Buffer
}

func startChild(t *testing.T, environ []string, args ...string) *child {
	t.Helper()
	c := &child{done: make(chan struct{}), running: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(os.Environ(), append([]string{runMainEnv + "=1", "FLEETJOB_LOG_LEVEL=warn"}, environ...)...)
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.stderr.Write(b)
	})
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "fleetjob is running") {
				once.Do(func() { close(c.running) })
			}
		}
		io.Copy(io.Discard, stdout)
		c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", args, c.errors())
		}
	})
	return c
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (c *child) errors() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// waitRunning waits for serve's banner.
func (c *child) waitRunning(t *testing.T) {
	t.Helper()
	select {
	case <-c.running:
	case <-c.done:
		t.Fatalf("exited (%v) before it ran: %s", c.cmd.ProcessState, c.errors())
	case <-time.After(60 * time.Second):
		t.Fatal("not running after 60s")
	}
}

// waitExit waits for the process to end and returns its exit code.
func (c *child) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("still running after %s", timeout)
		return 0
	}
}

// stop sends SIGTERM and waits for the process to end. (A process
// stopped while it is still starting may exit 1 with "context canceled";
// these tests are about the lock, so the code does not matter here.)
func (c *child) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitExit(t, 30*time.Second)
}

// wantRefused checks that c exited non-zero saying that dir is held by
// the process pid.
func (c *child) wantRefused(t *testing.T, dir string, pid int) {
	t.Helper()
	code := c.waitExit(t, 30*time.Second)
	msg := c.errors()
	want := fmt.Sprintf("data directory %s is in use by another fleetjob process (pid %d)", dir, pid)
	if code == 0 || !strings.Contains(msg, want) {
		t.Errorf("second process: exit code %d, stderr %q; want non-zero and %q", code, msg, want)
	}
}

// TestServeRefusesALockedDataDir starts two real serve processes on one
// data directory: the second stops at once, naming the directory and the
// first's pid, while the first runs on; once the first has stopped, the
// directory can be used again.
func TestServeRefusesALockedDataDir(t *testing.T) {
	dir := t.TempDir()
	args := []string{"serve", "--data-dir", dir, "--no-agent", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:-1"}
	env := []string{"REDIS_URL=", "FLEETJOB_TOKEN=t"}
	first := startChild(t, env, args...)
	first.waitRunning(t)

	second := startChild(t, env, args...)
	second.wantRefused(t, dir, first.cmd.Process.Pid)
	select {
	case <-first.done:
		t.Fatalf("the first process ended when the second started: %s", first.errors())
	default:
	}

	first.stop(t)
	third := startChild(t, env, args...)
	third.waitRunning(t)
	third.stop(t)
}

// TestAgentRefusesALockedDataDir does the same for the agent role and its
// own data directory.
func TestAgentRefusesALockedDataDir(t *testing.T) {
	dir := t.TempDir()
	n := testenv.NATS(t)
	js, err := jetstream.New(n.Connect(t, natsauth.RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"NATS_URL=" + n.URL, "FLEETJOB_NATS_CREDS=" + n.AgentCredsFile(t, js, "locked", dir)}
	args := []string{"agent", "--id", "locked", "--ip", "127.0.0.1", "--data-dir", dir}
	first := startChild(t, env, args...)
	lock := filepath.Join(dir, lockName)
	testenv.Eventually(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(lock)
		return strings.TrimSpace(string(b)) == strconv.Itoa(first.cmd.Process.Pid)
	}, "the first agent to hold %s", lock)

	second := startChild(t, env, append(args[:2:2], "other", "--data-dir", dir)...)
	second.wantRefused(t, dir, first.cmd.Process.Pid)
	first.stop(t)
}

// TestLockDir: a lock is exclusive while held, even within one process,
// and free again once released.
func TestLockDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	unlock, err := lockDir(dir, "--data-dir")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir, "--data-dir")
	want := fmt.Sprintf("data directory %s is in use by another fleetjob process (pid %d), which holds its lock file fleetjob.lock: stop that process, or choose another directory with --data-dir", dir, os.Getpid())
	if err == nil || err.Error() != want {
		t.Fatalf("second lock: got %v, want %q", err, want)
	}
	unlock()
	unlock, err = lockDir(dir, "--data-dir")
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlock()
}
