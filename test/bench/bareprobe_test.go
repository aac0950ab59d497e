package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// bareProbe is the floor of the big-job benchmarks' one-host probe: what a
// one-host job must do on this machine with none of fleetjob's logic, the
// four durable writes on its path one after the other (submit, task,
// report, state: JetStream publish-with-ack on a stream with the JOBS
// stream's settings) and the script's process (`bash -c true`), from the
// test process, which runs the embedded NATS server and the workers as an
// all-in-one `serve` does. Measured on the idle system and once a second
// during the storm, half a second after each probe, it says how much of
// the probe's latency under the storm is the machine's (its two cores
// taken by the storm) and how much is fleetjob's.
type bareProbe struct {
	s       *testenv.System
	subject string
	body    []byte
	bash    string
}

func newBareProbe(b *testing.B, s *testenv.System) *bareProbe {
	b.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		b.Fatal(err)
	}
	return &bareProbe{s: s, subject: rawStream(b, s), body: jobBody(bigProbeIP), bash: bash}
}

// once runs the bare probe and returns how long it took.
func (p *bareProbe) once() (time.Duration, error) {
	t0 := time.Now()
	for range 4 {
		if _, err := p.s.JS.Publish(context.Background(), p.subject, p.body); err != nil {
			return 0, err
		}
	}
	t1 := time.Now()
	if err := exec.Command(p.bash, "-c", "true").Run(); err != nil {
		return 0, err
	}
	if os.Getenv("FLEETJOB_BENCH_TIMELINE") != "" {
		fmt.Printf("bare: writes %dms, bash %dms\n", t1.Sub(t0).Milliseconds(), time.Since(t1).Milliseconds())
	}
	return time.Since(t0), nil
}

// idle runs the bare probe n times in a row.
func (p *bareProbe) idle(b *testing.B, n int) []time.Duration {
	b.Helper()
	out := make([]time.Duration, 0, n)
	for range n {
		d, err := p.once()
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// meanwhile runs the bare probe once a second, starting half a second from
// now, until stop is closed, and returns what it measured (at least one).
func (p *bareProbe) meanwhile(stop <-chan struct{}) (wait func() ([]time.Duration, error)) {
	var (
		wg  sync.WaitGroup
		out []time.Duration
		err error
	)
	wg.Go(func() {
		next := time.NewTimer(500 * time.Millisecond)
		defer next.Stop()
		for {
			select {
			case <-stop:
				if len(out) == 0 {
					var d time.Duration
					if d, err = p.once(); err == nil {
						out = append(out, d)
					}
				}
				return
			case <-next.C:
			}
			var d time.Duration
			if d, err = p.once(); err != nil {
				return
			}
			out = append(out, d)
			next.Reset(time.Second)
		}
	})
	return func() ([]time.Duration, error) {
		wg.Wait()
		return out, err
	}
}
