package test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// These tests run against the real embedded server with the real
// authority: what they show is the server's enforcement, not ours.

// violations collects a connection's asynchronous errors.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	})
}

// saw reports whether the server refused something on subject.
func (v *violations) saw(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(strings.ToLower(e), "permissions violation") && strings.Contains(e, subject) {
			return true
		}
	}
	return false
}

// denied runs do (which must not succeed) and waits for the server's
// permissions violation on subject.
func denied(t *testing.T, v *violations, subject, what string, do func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := do(ctx); err == nil {
		t.Errorf("%s: succeeded, want it refused", what)
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for !v.saw(subject) {
		if time.Now().After(deadline) {
			t.Errorf("%s: no permissions violation on %q from the server (saw %q)", what, subject, v.errs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNATSConnectionWithoutCredentialsRefused(t *testing.T) {
	t.Parallel()
	n := testenv.NATS(t)
	nc, err := nats.Connect(n.URL, nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("got %v, want an authorization violation", err)
	}
	// a user of another operator's account is refused the same way
	foreign, other, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	foreign.Shutdown()
	if nc, err := nats.Connect(n.URL, other.Option(), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a user signed by another operator was accepted")
	}
}

func TestNATSAgentCredentialsAllowOnlyItsOwn(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	// a2 has a job: its spec, a log and a task consumer to steal from
	id := submit(t, s, script("echo secret-output", "127.0.0.2"), nil)
	waitJob(t, s, id, 20*time.Second)

	var v violations
	nc := s.AgentConn(t, "a1", v.handler())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	other := schemas.AgentConsumer("a2")

	nextOther := "$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamTasks + "." + other
	denied(t, &v, nextOther, "pull another agent's tasks", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, nextOther, []byte(`{"batch":1,"expires":500000000}`))
		return err
	})
	denied(t, &v, "fleetjob.task.>", "subscribe to every task", func(ctx context.Context) error {
		sub, err := nc.SubscribeSync("fleetjob.task.>")
		if err != nil {
			return err
		}
		_, err = sub.NextMsgWithContext(ctx)
		return err
	})
	before := s.CommandCount(t)
	denied(t, &v, schemas.SubjSubmit, "publish a command", func(ctx context.Context) error {
		_, err := js.Publish(ctx, schemas.SubjSubmit, []byte(`{}`))
		return err
	})
	if after := s.CommandCount(t); after != before {
		t.Errorf("the JOBS stream took a command from an agent: %d → %d", before, after)
	}
	forged := schemas.ResultSubject(schemas.DefaultPool, "a2", id)
	denied(t, &v, forged, "publish a report as another agent", func(ctx context.Context) error {
		_, err := js.Publish(ctx, forged, []byte(`{}`))
		return err
	})
	for _, kick := range []string{schemas.PartitionedSweeperResultSubject(id, schemas.DefaultTopology().ResultPartitions),
		schemas.SweeperResultSubject(id)} {
		denied(t, &v, kick, "kick a job as the sweeper", func(ctx context.Context) error {
			_, err := js.Publish(ctx, kick, []byte(`{}`))
			return err
		})
	}
	otherLog := schemas.LogRef{Job: id, Attempt: 1, Pool: schemas.DefaultPool, Agent: "a2"}.Subject()
	denied(t, &v, otherLog, "publish a log chunk as another agent", func(ctx context.Context) error {
		_, err := js.Publish(ctx, otherLog, []byte("forged"))
		return err
	})
	readOther := "$JS.API.DIRECT.GET." + schemas.StreamLogs + "." + otherLog
	denied(t, &v, readOther, "read another agent's log", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, readOther, nil)
		return err
	})
	msgGet := "$JS.API.STREAM.MSG.GET." + schemas.StreamLogs
	denied(t, &v, msgGet, "read the log stream by sequence", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, msgGet, []byte(`{"seq":1}`))
		return err
	})
	cmdGet := "$JS.API.DIRECT.GET." + schemas.StreamJobs
	denied(t, &v, cmdGet, "read a job's submit command (its spec)", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, cmdGet, []byte(`{"seq":`+strconv.FormatInt(id, 10)+`}`))
		return err
	})
	specGet := "$JS.API.DIRECT.GET.KV_" + schemas.BucketJobs + "." + schemas.KVSubject(schemas.BucketJobs, schemas.KeyJobSpec(id))
	denied(t, &v, specGet, "read a job spec", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, specGet, nil)
		return err
	})
	denied(t, &v, "$JS.API.STREAM.CREATE.STOLEN", "create a stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "STOLEN", Subjects: []string{"fleetjob.task.>"}})
		return err
	})
	denied(t, &v, "$JS.API.CONSUMER.CREATE."+schemas.StreamTasks, "create a consumer of every task", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTasks, jetstream.ConsumerConfig{Durable: "thief", FilterSubject: "fleetjob.task.>"})
		return err
	})
	hb := schemas.KVSubject(schemas.BucketAgents, "a2")
	denied(t, &v, hb, "heartbeat as another agent", func(ctx context.Context) error {
		_, err := js.Publish(ctx, hb, []byte(`{"id":"a2","ip":"127.0.0.9","last_seen":"2099-01-01T00:00:00Z"}`))
		return err
	})
	denied(t, &v, schemas.ControlSubject(schemas.DefaultPool, "a2"), "listen on another agent's control subject", func(ctx context.Context) error {
		sub, err := nc.SubscribeSync(schemas.ControlSubject(schemas.DefaultPool, "a2"))
		if err != nil {
			return err
		}
		_, err = sub.NextMsgWithContext(ctx)
		return err
	})
	held := schemas.HeldSubject(id)
	denied(t, &v, held, "forward reports to a held first commit", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, held, []byte(`[]`))
		return err
	})
	denied(t, &v, schemas.SubjHeldAll, "listen for the workers' forwarded reports", func(ctx context.Context) error {
		sub, err := nc.SubscribeSync(schemas.SubjHeldAll)
		if err != nil {
			return err
		}
		_, err = sub.NextMsgWithContext(ctx)
		return err
	})
	denied(t, &v, "_INBOX.>", "read the services' replies", func(ctx context.Context) error {
		sub, err := nc.SubscribeSync("_INBOX.>")
		if err != nil {
			return err
		}
		_, err = sub.NextMsgWithContext(ctx)
		return err
	})
	// and what it may do, it can: its own log, read back by direct get
	own := schemas.LogRef{Job: id, Attempt: 1, Pool: schemas.DefaultPool, Agent: "a1"}.Subject()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, own, []byte("mine")); err != nil {
		t.Fatalf("publish its own log chunk: %v", err)
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+schemas.StreamLogs+"."+own, nil)
	if err != nil || string(m.Data) != "mine" {
		t.Fatalf("read back its own log: %v %+v", err, m)
	}
}

// A report on an agent's own subject about a host it was not dispatched
// to, or naming another agent in its body, is refused and counted.
func TestForgedReportRefusedByWorkers(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	id := submit(t, s, script("sleep 3; echo real", "127.0.0.2"), nil)
	waitStatus(t, s, id, "127.0.0.2", schemas.HostRunning, 15*time.Second)

	nc := s.AgentConn(t, "a1")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	code := 0
	now := time.Now().UTC()
	forge := func(agentInBody, reason string) {
		t.Helper()
		r := schemas.Report{V: schemas.MessageVersion, Kind: schemas.ReportFinished, JobID: id, Host: 0, Attempt: 1,
			ExecID: schemas.ExecID(id, 0, 0, 1), AgentID: agentInBody, Status: schemas.HostSuccess, ExitCode: &code,
			StartedAt: now, EndedAt: now}
		b, _ := json.Marshal(r)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, schemas.ResultSubject(schemas.DefaultPool, "a1", id), b); err != nil {
			t.Fatalf("publish on its own result subject: %v", err)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return refused(t, s, reason) >= 1 },
			"the worker to refuse a report (%s)", reason)
	}
	forge("a1", "not_dispatched")
	forge("a2", "agent_mismatch")
	if h := hostByIP(t, s, id, "127.0.0.2"); h.Status != schemas.HostRunning {
		t.Fatalf("after forged reports the host is %s, want still running", h.Status)
	}
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobSuccess {
		t.Fatalf("job: %s, want success by its real agent", sum.Status)
	}
	if got := fullLog(t, s, id, "127.0.0.2"); strings.Join(got, "|") != "real" {
		t.Errorf("log: %q, want the real agent's", got)
	}
}

// refused reads fleetjob_reports_refused_total{reason} of the workers.
func refused(t *testing.T, s *testenv.System, reason string) float64 {
	t.Helper()
	return refusedCount(t, s, "fleetjob_reports_refused_total", reason)
}

// refusedCount reads counter name's series with label reason, summed over
// its other labels, from the workers' metrics.
func refusedCount(t *testing.T, s *testenv.System, name, reason string) float64 {
	t.Helper()
	mfs, err := s.WorkerMetrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// Revoking an agent's key cuts its connection at once, and it cannot
// connect again with the credentials it had.
func TestNATSRevokedAgentDisconnected(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	closed := make(chan struct{})
	var mu sync.Mutex
	var lastErr error
	nc := s.AgentConn(t, "r1", nats.MaxReconnects(5), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			mu.Lock()
			if err != nil {
				lastErr = err
			}
			mu.Unlock()
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if !nc.IsConnected() {
		t.Fatal("agent not connected before revocation")
	}
	keys, err := agentkeys.LoadOrCreate(s.AgentDir("r1"))
	if err != nil {
		t.Fatal(err)
	}
	// credentials issued before the revocation, as the agent holds them
	tok, err := s.NATS.Auth.AgentJWT("r1", keys.UserPublic())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.NATS.Auth.Revoke(ctx, keys.UserPublic()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatalf("the revoked agent is still connected (%v)", nc.Status())
	}
	mu.Lock()
	t.Logf("revoked agent's last error: %v", lastErr)
	mu.Unlock()
	// the same credentials are refused from now on
	if again, err := nats.Connect(s.NATSURL, natsauth.AgentOption("r1", tok, keys.User), nats.NoReconnect()); err == nil {
		again.Close()
		t.Fatal("the revoked agent connected again")
	}
}
