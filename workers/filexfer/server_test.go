package filexfer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/natsrv"
)

// serveEnv, when set to a directory, makes the test binary an embedded
// NATS server storing there instead of running tests (see TestMain).
const serveEnv = "FLEETJOB_FILEXFER_SERVE"

// serve runs the server, prints its URL, and stops when stdin closes (the
// test that started it is done, or dead).
func serve(dir string) int {
	s, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(s.ClientURL(), user.JWT, user.Seed)
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.Shutdown()
	return 0
}

// newStoreProcess starts the embedded server in a child process and
// returns a URL to it. Memory tests use it so that the heap they measure
// is the transfer's alone, as on an agent, not the server's too.
func newStoreProcess(t testing.TB) (string, natsrv.User) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serveEnv+"="+t.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server process: %v", err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	go func() { done <- cmd.Wait() }()
	f := strings.Fields(url)
	if err != nil || len(f) != 3 {
		t.Fatalf("server process gave no URL and user: %q %v", url, err)
	}
	return f[0], natsrv.User{JWT: f[1], Seed: f[2]}
}
