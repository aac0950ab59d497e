package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/outbound"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/callback"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// codes numbers statuses and steps the way a test can tell apart.
var codes = callback.Codes{
	RunStatus: func(status string) int {
		return map[string]int{schemas.JobSuccess: 3, schemas.JobFailed: 4}[status]
	},
	StepInstanceID: func(job int64, step int) int64 { return job*10 + int64(step) },
}

// env is a sender's world: embedded JetStream with fleetjob's topology
// and the status cache over a real Redis.
type env struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	cache *statuscache.Cache
}

func newEnv(t *testing.T) *env {
	t.Helper()
	js := testenv.JetStream(t)
	if err := schemas.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := js.Stream(t.Context(), schemas.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return &env{js: js, kv: kv, cache: statuscache.New(rdb, kv, cmds, testenv.Logger())}
}

// sender returns a sender over e whose requests go through rt (nil: the
// default transport).
func (e *env) sender(rt http.RoundTripper) *callback.Sender {
	s := callback.New(e.js, e.kv, e.cache, codes, outbound.New(netip.MustParsePrefix("127.0.0.1/32")), testenv.Logger())
	if rt != nil {
		callback.SetTransport(s, rt)
	}
	return s
}

// run starts s.Run and waits until it pulls; the channel gets what Run
// returned.
func (e *env) run(t *testing.T, ctx context.Context, s *callback.Sender) <-chan error {
	t.Helper()
	done := testenv.Go(func() error { return s.Run(ctx) })
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, err := e.js.Consumer(t.Context(), schemas.StreamEvents, schemas.ConsumerCallbacks)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumWaiting > 0
	}, "the sender pulling")
	return done
}

// returned waits for Run to return nil after its ctx ended.
func returned(t *testing.T, done <-chan error) {
	t.Helper()
	testenv.Returned(t, done, 10*time.Second, "Run")
}

// finish stores job id as ended with status after two steps, calling
// back target (none when empty), and publishes its job.finished event
// the way the worker does; it returns the event's stream sequence.
func (e *env) finish(t *testing.T, id int64, status, target string) uint64 {
	t.Helper()
	spec := schemas.JobSpec{Name: "t", CallbackURL: target}
	st := schemas.JobState{ID: id, Status: status, Steps: []schemas.StepState{{Status: schemas.JobSuccess}, {Status: status}},
		EndedAt: time.Now().UTC()}
	for key, v := range map[string]any{schemas.KeyJobSpec(id): spec, schemas.KeyJobState(id): st} {
		b, _ := json.Marshal(v)
		if _, err := e.kv.Put(t.Context(), key, b); err != nil {
			t.Fatal(err)
		}
	}
	m, err := events.Encode("test", events.Event{Kind: events.JobFinished, Subject: strconv.FormatInt(id, 10),
		ID: fmt.Sprintf("%d.%d", id, st.EndedAt.UnixNano()), Time: st.EndedAt,
		Data: map[string]any{"id": id, "status": status, "callback": target != ""}})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// settled reports whether the sender has acked every event up to seq.
func (e *env) settled(t *testing.T, seq uint64) bool {
	t.Helper()
	c, err := e.js.Consumer(t.Context(), schemas.StreamEvents, schemas.ConsumerCallbacks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.AckFloor.Stream >= seq && info.NumAckPending == 0
}

// record reads a job's callback record.
func (e *env) record(t *testing.T, id int64) (schemas.CallbackRecord, bool) {
	t.Helper()
	rec, ok, err := callback.Get(t.Context(), e.kv, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec, ok
}

// receiver is a callback URL that answers each request with the next of
// its statuses (200 once they run out) and keeps what it was sent.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []request
}

type request struct {
	ContentType string
	Body        string
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got = append(r.got, request{req.Header.Get("Content-Type"), string(b)})
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.got...)
}

// A finished job's callback is POSTed once as JSON with the codes the
// surface gave, recorded as delivered, and its event acked.
func TestSenderDeliversAndRecords(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, e.sender(nil))
	seq := e.finish(t, 7, schemas.JobFailed, r.URL+"/hook")
	testenv.Eventually(t, 10*time.Second, func() bool { return e.settled(t, seq) }, "the event acked")
	cancel()
	returned(t, done)

	got := r.requests()
	want := []request{{"application/json", `{"job_instance_id":7,"status":4,"step_instance_list":[` +
		`{"step_instance_id":70,"status":3},{"step_instance_id":71,"status":4}]}`}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("requests (-got +want):\n%s", diff)
	}
	rec, ok := e.record(t, 7)
	if !ok || !rec.Delivered || rec.GaveUp || rec.URL != r.URL+"/hook" || rec.Status != 4 ||
		len(rec.Attempts) != 1 || rec.Attempts[0].HTTPStatus != 200 {
		t.Errorf("record %+v, want delivered on the first attempt", rec)
	}
}

// A failed JSON attempt is followed at once, in the same round, by a
// form-encoded one; both are recorded.
func TestSenderRetriesFormEncoded(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, http.StatusInternalServerError)
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, e.sender(nil))
	seq := e.finish(t, 8, schemas.JobSuccess, r.URL)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.settled(t, seq) }, "the event acked")
	cancel()
	returned(t, done)

	got := r.requests()
	if len(got) != 2 || got[1].ContentType != "application/x-www-form-urlencoded" {
		t.Fatalf("requests %+v, want JSON then a form", got)
	}
	form, err := url.ParseQuery(got[1].Body)
	if err != nil {
		t.Fatal(err)
	}
	wantForm := url.Values{"job_instance_id": {"8"}, "status": {"3"},
		"step_instance_list": {`[{"step_instance_id":80,"status":3},{"step_instance_id":81,"status":3}]`}}
	if diff := cmp.Diff(form, wantForm); diff != "" {
		t.Errorf("form (-got +want):\n%s", diff)
	}
	rec, _ := e.record(t, 8)
	var statuses []int
	for _, a := range rec.Attempts {
		statuses = append(statuses, a.HTTPStatus)
	}
	if !rec.Delivered || !cmp.Equal(statuses, []int{500, 200}) {
		t.Errorf("record: delivered %v, attempts %v, want delivered after 500 then 200", rec.Delivered, statuses)
	}
}

// Events of jobs without a callback URL are acked with nothing sent and
// nothing recorded, whether the event says so or only the spec does.
func TestSenderSkipsJobsWithoutCallback(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, e.sender(nil))
	e.finish(t, 9, schemas.JobSuccess, "")
	// an event that does not say (as an older worker's) makes the sender
	// load the spec, which has no URL either
	m, _ := events.Encode("test", events.Event{Kind: events.JobFinished, Subject: "10", ID: "10.1", Time: time.Now(),
		Data: map[string]any{"id": 10}})
	if _, err := e.kv.Put(t.Context(), schemas.KeyJobSpec(10), []byte(`{"name":"t"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Put(t.Context(), schemas.KeyJobState(10), []byte(`{"id":10,"status":"success"}`)); err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.settled(t, ack.Sequence) }, "both events acked")
	cancel()
	returned(t, done)

	if got := r.requests(); len(got) != 0 {
		t.Errorf("requests %+v, want none", got)
	}
	for _, id := range []int64{9, 10} {
		if rec, ok := e.record(t, id); ok {
			t.Errorf("job %d: record %+v, want none", id, rec)
		}
	}
}

// gate is a transport that holds each request until the gate opens,
// deaf to its context like a stack stuck in a write, then answers 200.
type gate struct {
	entered chan struct{}
	open    chan struct{}
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	g.entered <- struct{}{}
	<-g.open
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(nil)), Request: req}, nil
}

// pulling reports whether a goroutine is still in pull.Batches.
func pulling() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "workers/pull.Batches(")
}

// Run does not return while a delivery it started is in flight: once ctx
// ends it stops pulling, waits for the handler, which records the round
// it finished (its context for that outlives Run's), and only then
// returns, leaving no goroutine behind.
func TestRunJoinsItsHandlers(t *testing.T) {
	e := newEnv(t)
	g := &gate{entered: make(chan struct{}, 1), open: make(chan struct{})}
	// the consumer's goroutines in the server are not Run's
	if _, err := e.js.CreateOrUpdateConsumer(t.Context(), schemas.StreamEvents, schemas.DefaultTopology().CallbackConsumer()); err != nil {
		t.Fatal(err)
	}
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, e.sender(g))
	e.finish(t, 11, schemas.JobSuccess, "http://receiver.invalid/hook")
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no callback request within 10s")
	}
	cancel()
	testenv.Eventually(t, 10*time.Second, func() bool { return !pulling() }, "Run to stop pulling")
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while its handler was in flight", err)
	default:
	}
	close(g.open)
	returned(t, done)

	if rec, ok := e.record(t, 11); !ok || !rec.Delivered {
		t.Errorf("record %+v (found %v), want the delivery that ended after shutdown began recorded", rec, ok)
	}
	goleak.VerifyNone(t, before)
}

// abandon is a transport that answers nothing until the request's context
// ends, like a receiver that hangs.
type abandon struct{ entered chan struct{} }

func (a abandon) RoundTrip(req *http.Request) (*http.Response, error) {
	a.entered <- struct{}{}
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// A round cut short by shutdown is not recorded as an attempt, and its
// event is handed back at once: another sender delivers it well within
// the consumer's minute-long ack wait.
func TestShutdownHandsAnUnfinishedRoundToTheNextSender(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	a := abandon{entered: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, e.sender(a))
	seq := e.finish(t, 12, schemas.JobSuccess, r.URL)
	select {
	case <-a.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no callback request within 10s")
	}
	cancel()
	returned(t, done)
	if rec, ok := e.record(t, 12); ok {
		t.Fatalf("record %+v, want none for a round shutdown cut short", rec)
	}

	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := e.run(t, ctx2, e.sender(nil))
	testenv.Eventually(t, 10*time.Second, func() bool { return e.settled(t, seq) }, "the next sender to deliver it")
	cancel2()
	returned(t, done2)
	rec, _ := e.record(t, 12)
	if !rec.Delivered || len(rec.Attempts) != 1 {
		t.Errorf("record %+v, want delivered with the one attempt that reached the receiver", rec)
	}
	if got := r.requests(); len(got) != 1 {
		t.Errorf("receiver got %d requests, want 1", len(got))
	}
}

// A callback URL the outbound guard refuses (loopback, when no prefix
// allows it) is never requested: the record says why and gives up at once,
// since no later round would differ.
func TestSenderRefusesInternalURLs(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	s := callback.New(e.js, e.kv, e.cache, codes, outbound.New(), testenv.Logger())
	ctx, cancel := context.WithCancel(t.Context())
	done := e.run(t, ctx, s)
	seq := e.finish(t, 9, schemas.JobSuccess, r.URL)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.settled(t, seq) }, "the event acked")
	cancel()
	returned(t, done)

	if got := r.requests(); len(got) != 0 {
		t.Errorf("the loopback receiver got %d requests", len(got))
	}
	rec, ok := e.record(t, 9)
	if !ok || rec.Delivered || !rec.GaveUp || len(rec.Attempts) != 1 || !strings.Contains(rec.Attempts[0].Error, "not allowed") {
		t.Errorf("record %+v, want one refused attempt and given up", rec)
	}
}
