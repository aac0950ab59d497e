package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// natsCluster is a real 3-node NATS JetStream cluster: each node is a
// child process of the fleetjob binary (`fleetjob nats-server -c`), with
// its own ports and store dir, so one can be SIGKILLed and restarted on
// its store.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
	// auth is the authority every node trusts (nats-auth init's snippet,
	// included by each node's configuration)
	auth *natsauth.Authority
}

type natsNode struct {
	name string
	port int
	conf string
	proc *proc
}

// startCluster starts n nodes and waits until JetStream has a meta leader.
func startCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	auth, err := natsauth.LoadOrCreate(filepath.Join(dir, "nats-auth"))
	if err != nil {
		t.Fatal(err)
	}
	c := &natsCluster{t: t, auth: auth}
	var routes []string
	clusterPorts := make([]int, n)
	for i := range n {
		clusterPorts[i] = testenv.FreePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), port: testenv.FreePort(t)}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		snippet, err := auth.ServerConfig(filepath.Join(dir, nd.name+"-accounts"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, nd.name+"-auth.conf"), []byte(snippet), 0o600); err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf(`server_name: %s
include %q
listen: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q }
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [ %s ]
}
`, nd.name, nd.name+"-auth.conf", nd.port, filepath.Join(dir, nd.name), clusterPorts[i], strings.Join(routes, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		c.start(i)
	}
	c.waitReady()
	return c
}

// URL lists every node, as fleetjob processes are given it.
func (c *natsCluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) start(i int) {
	nd := c.nodes[i]
	nd.proc = startProc(c.t, "", nil, "nats-server", "-c", nd.conf)
}

// kill SIGKILLs node i.
func (c *natsCluster) kill(i int) { c.nodes[i].proc.kill() }

// restart starts node i again on its store and waits for the cluster.
func (c *natsCluster) restart(i int) {
	c.start(i)
	c.waitReady()
}

// node returns the index of the node named name.
func (c *natsCluster) node(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	c.t.Fatalf("no node %q", name)
	return -1
}

// admin is a connect option with a new admin identity.
func (c *natsCluster) admin() nats.Option {
	c.t.Helper()
	cr, err := c.auth.ServiceCreds(natsauth.RoleAdmin, "test-admin")
	if err != nil {
		c.t.Fatal(err)
	}
	return cr.Option()
}

// connect opens a client connection to the cluster, as the admin.
func (c *natsCluster) connect() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL(), c.admin(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// waitReady waits until every running node answers and JetStream (its
// meta group) accepts requests.
func (c *natsCluster) waitReady() {
	c.t.Helper()
	testenv.Eventually(c.t, 60*time.Second, func() bool {
		for _, nd := range c.nodes {
			select {
			case <-nd.proc.done:
				continue
			default:
			}
			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", nd.port), c.admin(), nats.NoReconnect())
			if err != nil {
				return false
			}
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err != nil {
				return false
			}
		}
		return true
	}, "NATS cluster ready")
}

// streamLeader names the node leading a stream's replica group.
func streamLeader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	var leader string
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	}, "a leader for %s", stream)
	return leader
}

// clusterSystem runs fleetjob as separate processes of the real binary on
// a 3-node cluster with three replicas: one API, two worker processes and
// the given agents.
func clusterSystem(t *testing.T, c *natsCluster, agents map[string]string) *testenv.System {
	t.Helper()
	_, js := c.connect()
	n := &testenv.NATSServer{URL: c.URL(), Auth: c.auth}
	s := &testenv.System{Token: "cluster", JS: js, NATS: n, NATSURL: c.URL(), RedisURL: testenv.Redis(t)}
	// the admin makes the topology; no other identity may
	top := schemas.DefaultTopology()
	top.Replicas = 3
	testenv.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return top.Ensure(ctx, js) == nil
	}, "the topology created with three replicas")
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_REPLICAS=3",
		"FLEETJOB_TOKEN=cluster", "FLEETJOB_LOG_LEVEL=warn", "FLEETJOB_ACK_WAIT=3s", "FLEETJOB_TASK_ACK_WAIT=3s"}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.APIURL = "http://" + addr
	// the API holds the NATS authority, as a split deployment's does: it
	// issues enrolling agents their credentials
	startProc(t, "", append(env, "FLEETJOB_NATS_CREDS="+n.CredsFile(t, natsauth.RoleAPI), "FLEETJOB_NATS_AUTH_DIR="+c.auth.Dir()),
		"api", "--http-addr", addr)
	s.WaitReady(t, 60*time.Second)
	workers := append(env, "FLEETJOB_NATS_CREDS="+n.CredsFile(t, natsauth.RoleWorker))
	startProc(t, "", workers, "worker", "--workers", "2")
	startProc(t, "", workers, "worker", "--workers", "2")
	for id, ip := range agents {
		dir := t.TempDir()
		// enrolled through the API process, which stores its credentials
		// in its data dir, where the agent finds them
		s.Enrol(t, id, ip, dir, "")
		startProc(t, "", env, "agent", "--id", id, "--ip", ip, "--data-dir", dir)
		s.WaitAgent(t, id)
	}
	return s
}

// Case 4: the leader of the command stream (JOBS, three replicas) is
// SIGKILLed during a submission storm and restarted later. Every
// submission that got a 2xx survives and runs once; clients that retry
// with the same idempotency key get the same job; no log line is lost.
func TestChaosCommandLeaderKilledDuringSubmitStorm(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	agents := map[string]string{"c4a": "127.0.1.204", "c4b": "127.0.1.205"}
	s := clusterSystem(t, c, agents)
	runs, out := newLedger(t), newLedger(t)
	body := func(i int) map[string]any {
		ip := agents["c4a"]
		if i%2 == 1 {
			ip = agents["c4b"]
		}
		return script(runs.append("$FLEETJOB_EXEC_ID")+"; "+out.noisy(3, "0"), ip)
	}

	const clients, perClient = 8, 25
	type result struct {
		ids      []int64 // every id a 2xx answer gave for the key
		failures []int   // status codes (0: no answer) before the 2xx
	}
	results := make([][]result, clients)
	var accepted atomic.Int64
	leader := streamLeader(t, s.JS, schemas.StreamJobs)
	var wg sync.WaitGroup
	for cl := range clients {
		results[cl] = make([]result, perClient)
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for i := range perClient {
				r := &results[cl][i]
				key := fmt.Sprintf("storm-%d-%d", cl, i)
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) {
					code, id := postJob(client, s, body(cl*perClient+i), key)
					if code == 202 {
						r.ids = append(r.ids, id)
						accepted.Add(1)
						break
					}
					r.failures = append(r.failures, code)
					time.Sleep(100 * time.Millisecond) // a client's pause before it retries, as a real one would
				}
			}
		})
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return accepted.Load() >= clients*perClient/4 }, "a quarter accepted")
	killed := c.node(leader)
	c.kill(killed)
	atKill := accepted.Load()
	wg.Wait()
	newLeader := streamLeader(t, s.JS, schemas.StreamJobs)
	c.restart(killed)

	// every key answered once more: the same job
	codes := map[int]int{}
	retried, failovers, mismatched := 0, 0, 0
	jobOf := map[string]int64{}
	client := &http.Client{Timeout: 10 * time.Second}
	for cl := range clients {
		for i := range perClient {
			r := results[cl][i]
			key := fmt.Sprintf("storm-%d-%d", cl, i)
			if len(r.ids) == 0 {
				t.Errorf("%s never accepted (%v)", key, r.failures)
				continue
			}
			for _, f := range r.failures {
				codes[f]++
			}
			if len(r.failures) > 0 {
				retried++
				failovers += len(r.failures)
			}
			code, again := postJob(client, s, body(cl*perClient+i), key)
			if code != 202 || again != r.ids[0] {
				mismatched++
				t.Errorf("%s: first job %d, asked again %d → %d", key, r.ids[0], code, again)
			}
			jobOf[key] = r.ids[0]
		}
	}
	distinct := map[int64]bool{}
	final := map[string]int{}
	for _, id := range jobOf {
		distinct[id] = true
		sum := waitJob(t, s, id, 90*time.Second)
		final[sum.Status]++
		if sum.Status != schemas.JobSuccess {
			t.Logf("job %d %s %q: hosts %+v", id, sum.Status, sum.Reason, hosts(t, s, id))
		}
	}
	twice := 0
	for _, n := range count(runs.lines(t)) {
		if n > 1 {
			twice++
		}
	}
	var logs []logRef
	for _, id := range jobOf {
		logs = append(logs, logRef{id, hosts(t, s, id)[0].Host.IP})
	}
	lines, lost, dup := out.logAudit(t, s, logs...)
	t.Logf("case 4: JOBS leader %s SIGKILLed after %d of %d submissions were accepted (new leader %s), restarted after the storm; "+
		"%d keys: %d retried through %d failed attempts %v, %d distinct jobs, %d asked again got another answer; jobs %v; "+
		"%d scripts ran, %d twice; log audit: %d ledger lines, %d lost, %d duplicated",
		leader, atKill, clients*perClient, newLeader, len(jobOf), retried, failovers, codes, len(distinct), mismatched, final,
		len(count(runs.lines(t))), twice, lines, lost, dup)
	if len(distinct) != clients*perClient || final[schemas.JobSuccess] != clients*perClient || twice != 0 || lost != 0 || dup != 0 {
		t.Errorf("want %d distinct jobs, all successful, each script run once and every log line once", clients*perClient)
	}
}

// postJob submits with an idempotency key; code 0 means no answer.
func postJob(client *http.Client, s *testenv.System, body any, key string) (int, int64) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.APIURL+"/v1/jobs", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	var out native.SubmitResponse
	if resp.StatusCode == 202 {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return 0, 0
		}
	}
	return resp.StatusCode, out.ID
}

// A revocation pushed to one node of a cluster cuts the agent's
// connection on another: the full resolvers share account updates.
func TestClusterRevocationReachesEveryNode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	_, js := c.connect()
	n := &testenv.NATSServer{URL: c.URL(), Auth: c.auth}
	dir := t.TempDir()
	creds := n.AgentCredsFile(t, js, "rc1", dir)
	closed := make(chan struct{})
	agentConn, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[2].port), nats.UserCredentials(creds),
		nats.CustomInboxPrefix(natsauth.AgentInboxPrefix("rc1")), nats.MaxReconnects(3), nats.ReconnectWait(50*time.Millisecond),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer agentConn.Close()
	sysCreds, err := c.auth.ServiceCreds(natsauth.RoleSystem, "test-system")
	if err != nil {
		t.Fatal(err)
	}
	sys, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[0].port), sysCreds.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	c.auth.UsePushConnection(sys)
	keys, err := agentkeys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.auth.Revoke(ctx, keys.UserPublic()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent revoked on node 1 is still connected to node 3 (%v)", agentConn.Status())
	}
	for _, nd := range c.nodes {
		if again, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", nd.port), nats.UserCredentials(creds), nats.NoReconnect()); err == nil {
			again.Close()
			t.Errorf("the revoked agent connected again to %s", nd.name)
		}
	}
}
