// Package failpoint lets the fault-injection suite crash or freeze a
// process at an exact point of its work, the way etcd's gofail does,
// without code generation. FLEETJOB_FAILPOINTS="name=N,other=M:stop" makes
// the Nth pass through Hit("name") SIGKILL the process, and the Mth pass
// through Hit("other") SIGSTOP it (frozen there until someone sends
// SIGCONT); "name=N:fail" makes Fail("name") return an error from its Nth
// pass on (work that can never succeed). Unset (always, outside the chaos tests), Hit is a map lookup
// on an empty map. FLEETJOB_FAILPOINTS is for the fault-injection suite
// only, so this package reads it itself, at start, rather than through
// the binary's configuration.
package failpoint

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// point is how many passes are left before a point fires, and the signal
// it sends the process.
type point struct {
	left int
	sig  syscall.Signal
	fail bool // Fail's, not Hit's
}

var (
	mu    sync.Mutex
	armed = parse(os.Getenv("FLEETJOB_FAILPOINTS"))
)

func parse(v string) map[string]point {
	m := map[string]point{}
	for _, kv := range strings.Split(v, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		n, action, _ := strings.Cut(val, ":")
		sig, fail := syscall.SIGKILL, false
		switch action {
		case "", "kill":
		case "stop":
			sig = syscall.SIGSTOP
		case "fail":
			fail = true
		default:
			continue
		}
		if c, err := strconv.Atoi(n); err == nil && c > 0 {
			m[name] = point{c, sig, fail}
		}
	}
	return m
}

// Hit counts a pass through the named point and, when the count armed for
// it is reached, kills the process with SIGKILL, or freezes it with
// SIGSTOP (it returns once the process is continued).
func Hit(name string) {
	if len(armed) == 0 {
		return
	}
	mu.Lock()
	p, ok := armed[name]
	if ok && !p.fail {
		p.left--
		armed[name] = p
	}
	mu.Unlock()
	if !ok || p.fail || p.left != 0 {
		return
	}
	if p.sig != syscall.SIGSTOP {
		_ = syscall.Kill(os.Getpid(), p.sig)
		if p.sig == syscall.SIGKILL {
			select {} // the signal is on its way
		}
		return
	}
	// A stop sent to ourselves takes effect when the kernel gets to each
	// thread, which can be after this goroutine has gone on (it was seen
	// to send its next request first): wait for the SIGCONT instead.
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	defer signal.Stop(cont)
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	<-cont
}

// Armed reports whether the named point will fire on its next pass, so
// the caller can flush what must be out first.
func Armed(name string) bool {
	if len(armed) == 0 {
		return false
	}
	mu.Lock()
	defer mu.Unlock()
	return armed[name].left == 1
}

// Fail counts a pass through the named point and returns an error from
// the pass its "N:fail" arms on, every pass after too.
func Fail(name string) error {
	if len(armed) == 0 {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	p, ok := armed[name]
	if !ok || !p.fail {
		return nil
	}
	if p.left > 1 {
		p.left--
		armed[name] = p
		return nil
	}
	return errors.New("failpoint " + name)
}
