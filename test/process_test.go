package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// binPath is the fleetjob binary built once for the process tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetjob-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "fleetjob")
	build := exec.Command("go", "build", "-o", binPath, "../cmd/fleetjob")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fleetjob:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a process of the real binary.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startProc runs `fleetjob args…` in cwd (when not empty) with env added;
// its output goes to a file that is printed if the test fails.
func startProc(t *testing.T, cwd string, env []string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "proc-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = cwd
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logf.Name()}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("output of %v:\n%s", args, b)
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// stopped reports whether the process is stopped (by SIGSTOP).
func (p *proc) stopped() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && strings.HasPrefix(string(b[i+1:]), " T")
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Errorf("process did not stop within %s of SIGTERM", timeout)
	}
}

// The hidden nats-server subcommand runs a real server from a config file
// in a child process (the cluster harness's building block).
func TestEmbeddedNATSServerProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := testenv.FreePort(t)
	conf := filepath.Join(dir, "n.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\nmax_payload: 8MB\njetstream { store_dir: %q }\n", port, dir+"/store")), 0o644)
	p := startProc(t, "", nil, "nats-server", "-c", conf)
	var nc *nats.Conn
	testenv.Eventually(t, 10*time.Second, func() bool {
		var err error
		nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
		return err == nil
	}, "the server at port %d to answer", port)
	defer nc.Close()
	if nc.MaxPayload() != 8<<20 {
		t.Errorf("max payload %d, want the config's 8 MiB", nc.MaxPayload())
	}
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Errorf("JetStream not enabled: %v", err)
	}
	p.stop(t, 10*time.Second)
}
