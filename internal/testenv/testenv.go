// Package testenv starts real dependencies for tests: an embedded
// nats-server with JetStream on a free port and a store in a temp dir, a
// real redis-server on a free port, and a whole fleetjob system (API,
// workers, agents running real bash) wired the way the binary wires it.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// Logger is a discarding logger, or stderr when FLEETJOB_TEST_LOG is set.
// That variable is the tests' own, so it is read here rather than in the
// binary's configuration.
func Logger() *slog.Logger {
	if os.Getenv("FLEETJOB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// NATS starts an embedded JetStream server for the test, with
// authentication as always (its authority's keys in a temp dir).
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	auth, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sa, err := auth.ServerAuth()
	if err != nil {
		t.Fatal(err)
	}
	s, err := natsrv.Start(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), Auth: sa})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	n := &NATSServer{URL: s.ClientURL(), Auth: auth}
	auth.UsePushConnection(n.Connect(t, natsauth.RoleSystem))
	return n
}

// JetStream starts an embedded JetStream server for the test and returns
// a client of it with the admin's identity; the connection is closed in
// cleanup.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc := NATS(t).Connect(t, natsauth.RoleAdmin)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// FreePort returns a TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Redis starts a real redis-server (no persistence) on a free port and
// returns its URL. Without redis-server the test fails and says how to get it.
func Redis(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: install it (apt-get install -y redis-server); `make test` does this when it can")
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", t.TempDir(), "--logfile", "")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
		ok := false
		for i := 0; i < 100; i++ {
			if rdb.Ping(context.Background()).Err() == nil {
				ok = true
				break
			}
			select {
			case <-done:
				i = 100
			case <-time.After(50 * time.Millisecond):
			}
		}
		rdb.Close()
		if ok {
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			return url
		}
		cmd.Process.Kill()
		<-done
	}
	t.Fatal("redis-server did not answer PING")
	return ""
}

// Eventually polls cond every 20 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Go runs f on a goroutine of its own; the channel gets what it returned.
func Go(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// Returned waits up to timeout for what Go started to return, typically
// after its ctx ended, and fails the test unless it returned nil.
func Returned(t testing.TB, done <-chan error, timeout time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s returned %v, want nil", what, err)
		}
	case <-time.After(timeout):
		t.Fatalf("%s did not return within %s", what, timeout)
	}
}

// Options shape a System.
type Options struct {
	// Workers run in the test process; 0 runs none (tests that start worker
	// processes of the real binary).
	Workers int
	// Agents are started in-process as "id=ip" pairs.
	Agents []string
	// AckWait and TaskAckWait shorten redelivery for fault tests; processes
	// of the binary get the same through FLEETJOB_ACK_WAIT and
	// FLEETJOB_TASK_ACK_WAIT.
	AckWait, TaskAckWait time.Duration
	// JobRetention replaces the topology's (tests of its end).
	JobRetention time.Duration
	// SharedResults makes RESULTS unpartitioned: one consumer every
	// worker shares, so a job's reports go to any worker process.
	SharedResults bool
	// SpecCache bounds the specs the workers keep (0: the default).
	SpecCache int
	// CreateWindow is how long a small job's first commit waits for its
	// reports (0: the default; negative: none).
	CreateWindow time.Duration
	// LogOutput, when set, gets every component's log (text, debug level)
	// instead of Logger's, for tests that read what the system logged.
	LogOutput io.Writer
}

// System is a running fleetjob: embedded NATS, real Redis, API, workers
// and agents. NC and JS (and P's) are the admin's: tests inspect and
// arrange through them; the API, the workers and each agent connect with
// identities of their own.
type System struct {
	NATS     *NATSServer
	NATSURL  string
	RedisURL string
	APIURL   string
	Token    string
	NC       *nats.Conn
	JS       jetstream.JetStream
	RDB      redis.UniversalClient
	P        roles.Plumbing
	Dir      string

	// WorkerMetrics is the metrics registry of the workers StartWorkers
	// started last.
	WorkerMetrics *prometheus.Registry

	agentMetrics *agent.Metrics
	mu           sync.Mutex
	agents       map[string]func()
}

// Start brings a system up for the test and tears it down in cleanup.
func Start(t testing.TB, o Options) *System {
	t.Helper()
	n := NATS(t)
	s := &System{NATS: n, NATSURL: n.URL, RedisURL: Redis(t), Token: "test-token", Dir: t.TempDir(), agents: map[string]func(){}}
	nc := n.Connect(t, natsauth.RoleAdmin, nats.MaxReconnects(-1))
	js := newJS(t, nc)
	rdb, err := roles.RedisClient(s.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s.NC, s.JS, s.RDB = nc, js, rdb
	top := schemas.DefaultTopology()
	if o.AckWait > 0 {
		top.AckWait = o.AckWait
	}
	if o.TaskAckWait > 0 {
		top.TaskWait = o.TaskAckWait
	}
	if o.JobRetention > 0 {
		top.JobRetention = o.JobRetention
	}
	if o.SharedResults {
		top.ResultPartitions = 0
	}
	// tests' callback receivers are httptest servers on loopback
	s.P = roles.Plumbing{NC: nc, JS: js, RDB: rdb, Top: top, Reg: prometheus.NewRegistry(), Log: Logger(),
		OutboundAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, SpecCache: o.SpecCache,
		CreateWindow: o.CreateWindow}
	if o.LogOutput != nil {
		s.P.Log = slog.New(slog.NewTextHandler(o.LogOutput, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.P.Top.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	s.agentMetrics = agent.NewMetrics(s.P.Reg)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.APIURL = "http://" + ln.Addr().String()
	api := s.rolePlumbing(t, natsauth.RoleAPI)
	s.run(t, "api", func(ctx context.Context) error {
		// the System's API keeps its curve key (sealing sensitive values)
		// 0600 in its dir, and issues agents' NATS credentials
		return roles.RunAPI(ctx, api, ln, roles.APIConfig{Token: s.Token, SealKeyFile: filepath.Join(s.Dir, "api", "curve.xk"),
			Issuer: roles.AuthorityIssuer{Auth: s.NATS.Auth, JS: api.JS, Top: api.Top}, AgentNATSURLs: []string{s.NATSURL}})
	})
	if o.Workers > 0 {
		s.StartWorkers(t, o.Workers)
		// every worker owns its result partitions before the test starts,
		// so none is handed over under the test's first jobs
		s.WaitResultPullers(t, o.Workers)
	}
	for _, a := range o.Agents {
		id, ip, _ := cut(a)
		s.StartAgent(t, id, ip)
	}
	Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(s.APIURL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, "api up")
	return s
}

func cut(a string) (string, string, bool) {
	for i := range a {
		if a[i] == '=' {
			return a[:i], a[i+1:], true
		}
	}
	return a, "127.0.0.1", false
}

// run starts a component and stops it (waiting for it) at cleanup; it
// returns the stop function.
func (s *System) run(t testing.TB, name string, f func(ctx context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("%s stopped: %v", name, err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// StartWorkers runs n workers (and a log indexer) in the test process.
func (s *System) StartWorkers(t testing.TB, n int) func() {
	p := s.rolePlumbing(t, natsauth.RoleWorker)
	p.Reg = prometheus.NewRegistry()
	s.WorkerMetrics = p.Reg
	return s.run(t, "workers", func(ctx context.Context) error {
		return roles.RunWorkers(ctx, p, n, fmt.Sprintf("test%d", workerSets.Add(1)))
	})
}

// StartAgent runs an agent in-process (real agent code, real bash),
// enrolled through the API with no scope unless it already is, and waits
// until it is registered; the returned function stops it.
func (s *System) StartAgent(t testing.TB, id, ip string) func() {
	t.Helper()
	if !s.enrolled(t, id) {
		s.Enrol(t, id, ip, s.agentDir(id), "")
	}
	cfg := agent.Config{
		ID: id, IP: ip, Version: "test", DataDir: s.agentDir(id),
		Slots: 64, Heartbeat: time.Second, ShutdownGrace: 2 * time.Second, Topology: s.P.Top,
	}
	p := s.P
	p.NC = s.AgentConn(t, id, nats.MaxReconnects(-1))
	p.JS = newJS(t, p.NC)
	stop := s.run(t, "agent "+id, func(ctx context.Context) error {
		return roles.RunAgent(ctx, p, cfg, s.agentMetrics)
	})
	s.WaitAgent(t, id)
	return stop
}

// WaitAgent waits until an agent is registered and online.
func (s *System) WaitAgent(t testing.TB, id string) {
	t.Helper()
	Eventually(t, 10*time.Second, func() bool {
		var out struct {
			Items []struct {
				ID     string `json:"id"`
				Online bool   `json:"online"`
			} `json:"items"`
		}
		if s.JSON(t, "GET", "/v1/agents?size=10000", nil, nil, &out) != 200 {
			return false
		}
		for _, a := range out.Items {
			if a.ID == id && a.Online {
				return true
			}
		}
		return false
	}, "agent %s online", id)
}

// Do sends a request to the API with the admin token (unless headers set
// Authorization) and returns the status and body.
func (s *System) Do(t testing.TB, method, path string, body any, headers map[string]string) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = bytes.NewBufferString(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.APIURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Token)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// JSON is Do that decodes the answer into out.
func (s *System) JSON(t testing.TB, method, path string, body any, headers map[string]string, out any) int {
	t.Helper()
	code, b := s.Do(t, method, path, body, headers)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return code
}

// CommandCount is how many commands the JOBS stream has ever accepted
// (its last sequence), to prove that bad input queued nothing.
func (s *System) CommandCount(t testing.TB) uint64 {
	t.Helper()
	st, err := s.JS.Stream(context.Background(), schemas.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// StartSimulator runs n simulated agents (pool pool, IPs from first) in
// the test process and waits until the last one is registered.
func (s *System) StartSimulator(t testing.TB, pool string, n int, first string) func() {
	t.Helper()
	creds := s.EnrolSimulator(t, pool, n, first)
	cfg := agent.SimConfig{Pool: pool, N: n, FirstIP: netip.MustParseAddr(first), Topology: s.P.Top, Version: "test"}
	p := s.P
	p.NC = s.NATS.connect(t, creds.Option(), nats.CustomInboxPrefix(natsauth.SimulatorInboxPrefix(pool)), nats.MaxReconnects(-1))
	p.JS = newJS(t, p.NC)
	stop := s.run(t, "simulator "+pool, func(ctx context.Context) error { return roles.RunSimulator(ctx, p, cfg) })
	s.WaitAgent(t, fmt.Sprintf("%s-%d", pool, n-1))
	return stop
}

// EnrolSimulator enrols simulator pool (n agents from IP first on), unless
// it is already, and returns its NATS credentials.
func (s *System) EnrolSimulator(t testing.TB, pool string, n int, first string) natsauth.Creds {
	t.Helper()
	firstIP := netip.MustParseAddr(first)
	if !s.enrolled(t, pool) {
		last := firstIP
		for range n - 1 {
			last = last.Next()
		}
		tok := s.EnrolToken(t, map[string]any{"agent": pool, "simulator": true, "hosts": []string{},
			"ranges": []map[string]any{{"cloud_id": 0, "first": first, "last": last.String()}}, "ttl": "1m"})
		keys, err := agentkeys.LoadOrCreate(s.agentDir(pool))
		if err != nil {
			t.Fatal(err)
		}
		s.EnrolWith(t, tok, pool, keys)
	}
	creds, err := s.NATS.Auth.SimulatorCreds(pool)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// WaitReady waits until the API at s.APIURL answers /readyz with 200.
func (s *System) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() bool {
		resp, err := http.Get(s.APIURL + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}, "%s ready", s.APIURL)
}

// Ledger is a file that scripts append lines to: what really ran, for a
// test to count (each run writes before the job's result is known).
type Ledger string

// NewLedger returns an empty ledger in the test's temp dir.
func NewLedger(t testing.TB) Ledger { return Ledger(filepath.Join(t.TempDir(), "ledger")) }

// Append is the shell that records a line.
func (l Ledger) Append(what string) string { return fmt.Sprintf("echo %s >> %s", what, string(l)) }

// Lines returns the words recorded so far.
func (l Ledger) Lines(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(string(l))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// Count counts each distinct word.
func Count(words []string) map[string]int {
	out := map[string]int{}
	for _, w := range words {
		out[w]++
	}
	return out
}

// workerSets numbers the worker sets tests start, so each worker has a
// name of its own (result partitions are owned by name).
var workerSets atomic.Int64
