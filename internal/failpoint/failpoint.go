// Package failpoint lets the fault-injection suite crash a process at an
// exact point of its work, the way etcd's gofail does, without code
// generation. FLEETJOB_FAILPOINTS="name=N,other=M" makes the Nth pass
// through Hit("name") SIGKILL the process. Unset (always, outside the
// chaos tests), Hit is a map lookup on an empty map.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	mu    sync.Mutex
	armed = parse(os.Getenv("FLEETJOB_FAILPOINTS"))
)

func parse(v string) map[string]int {
	m := map[string]int{}
	for _, kv := range strings.Split(v, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		if c, err := strconv.Atoi(n); err == nil && c > 0 {
			m[name] = c
		}
	}
	return m
}

// Hit counts a pass through the named point and kills the process with
// SIGKILL when the count armed for it is reached.
func Hit(name string) {
	if len(armed) == 0 {
		return
	}
	mu.Lock()
	n, ok := armed[name]
	if ok {
		armed[name] = n - 1
	}
	mu.Unlock()
	if ok && n == 1 {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// Armed reports whether the named point will kill the process on its
// next pass, so the caller can flush what must be out first.
func Armed(name string) bool {
	if len(armed) == 0 {
		return false
	}
	mu.Lock()
	defer mu.Unlock()
	return armed[name] == 1
}
