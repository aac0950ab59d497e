package statuscache

// This file holds the Go twins of the cache's two Lua scripts (putJob in
// summary.go, putHosts in statuscache.go), for a Redis-protocol server that
// can run Go beside its data: the in-process one of `fleetjob serve`
// (miniredis) starts a new Lua interpreter for every script call, ~300 µs
// of CPU and ~235 KB of garbage each, which was most of what serve spent
// per job. Each twin issues the same commands in the same order, with
// the same outcome for every input the scripts accept; the server runs
// it under the lock its Lua scripts run under, so it is as atomic.
// TestNativeScriptsMatchLua runs both on the same inputs and compares
// the replies and the data; a change to a script needs its twin changed.

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Call runs one Redis command inside a script run. It returns nil for a
// nil reply, a string for a bulk or simple string, an int for an integer,
// an []any for an array, and an error for an error reply.
type Call func(args ...string) (any, error)

// NativeScript is one of the cache's scripts: the SHA1 it is called by
// (EVALSHA), its Lua, and its Go twin.
type NativeScript struct {
	SHA, Lua string
	Run      func(call Call, keys, argv []string) (int, error)
}

// NativeScripts lists the cache's scripts with their Go twins.
func NativeScripts() []NativeScript {
	return []NativeScript{{putJob.Hash(), putJobLua, runPutJob}, {putHosts.Hash(), putHostsLua, runPutHosts}}
}

// luaNumber is the script's tonumber for what the cache sends: decimal
// numbers.
func luaNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f, err == nil
}

var (
	// revAndSet is putJob's string.match(cur, '^(%d+)|(%d+)|').
	revAndSet = regexp.MustCompile(`^([0-9]+)\|([0-9]+)\|`)
	// leadingRev is putHosts's string.match(cur, '^(%d+)|').
	leadingRev = regexp.MustCompile(`^([0-9]+)\|`)
)

// errNotNumber is what the scripts fail with when a number they compare
// is not one (a Lua "attempt to compare" error).
var errNotNumber = errors.New("attempt to compare a number with nil")

// key is KEYS[i] (1-based, as in the script), or an error where the
// script's redis.call would be given nil.
func key(keys []string, i float64) (string, error) {
	n := int(i)
	if float64(n) != i || n < 1 || n > len(keys) {
		return "", fmt.Errorf("Lua redis lib command arguments must be strings or integers (KEYS[%v])", i)
	}
	return keys[n-1], nil
}

// runPutJob is putJob (summary.go) in Go, line for line.
func runPutJob(call Call, keys, argv []string) (int, error) {
	if len(keys) < 4 || len(argv) < 6 {
		return 0, fmt.Errorf("putJob takes 4 or more keys and 6 arguments, got %d and %d", len(keys), len(argv))
	}
	var rev, old *string
	known, legacy := false, false
	cur, err := call("GET", keys[0])
	switch {
	case err != nil: // redis.pcall: a job an older fleetjob kept as a hash
		legacy = true
		h, err := call("HMGET", keys[0], "rev", "si")
		if err != nil {
			return 0, err
		}
		f, _ := h.([]any)
		if len(f) == 2 {
			if s, ok := f[0].(string); ok {
				rev, known = &s, true
			}
			if s, ok := f[1].(string); ok {
				old = &s
			}
		}
	case cur != nil:
		known = true
		if s, ok := cur.(string); ok {
			if m := revAndSet.FindStringSubmatch(s); m != nil {
				rev, old = &m[1], &m[2]
			}
		}
	}
	if rev != nil {
		have, ok1 := luaNumber(*rev)
		want, ok2 := luaNumber(argv[0])
		if !ok1 || !ok2 {
			return 0, errNotNumber
		}
		if have > want {
			return 0, nil
		}
	}
	si, siOK := luaNumber(argv[5])
	if legacy {
		if _, err := call("DEL", keys[0]); err != nil {
			return 0, err
		}
	}
	if _, err := call("SET", keys[0], argv[0]+"|"+argv[5]+"|"+argv[1]); err != nil {
		return 0, err
	}
	oldN, oldOK := 0.0, false
	if old != nil {
		oldN, oldOK = luaNumber(*old)
	}
	id := argv[2]
	switch {
	case !known:
		if _, err := call("ZADD", keys[1], id, id); err != nil {
			return 0, err
		}
		if _, err := call("ZADD", keys[3], id, id); err != nil {
			return 0, err
		}
	case !oldOK:
		for _, k := range keys[4:] {
			if _, err := call("ZREM", k, id); err != nil {
				return 0, err
			}
		}
	case (!siOK || oldN != si) && oldN > 0:
		k, err := key(keys, 4+oldN)
		if err != nil {
			return 0, err
		}
		if _, err := call("ZREM", k, id); err != nil {
			return 0, err
		}
	}
	if !siOK {
		return 0, errNotNumber
	}
	if si > 0 {
		k, err := key(keys, 4+si)
		if err != nil {
			return 0, err
		}
		if _, err := call("ZADD", k, id, id); err != nil {
			return 0, err
		}
	}
	if _, err := call("ZADD", keys[2], argv[4], id); err != nil {
		return 0, err
	}
	return 1, nil
}

// runPutHosts is putHosts (statuscache.go) in Go: the rows it reads and
// writes field by field in turn, read in one HMGET and written in one
// HSET (a field given twice is compared with what the first wrote, as
// the script would find it).
func runPutHosts(call Call, keys, argv []string) (int, error) {
	if len(keys) < 1 {
		return 0, errors.New("putHosts takes a key")
	}
	if len(argv)%3 != 0 {
		return 0, errors.New("attempt to concatenate a nil value (putHosts takes field, revision, row triples)")
	}
	if len(argv) == 0 {
		return 1, nil
	}
	get := []string{"HMGET", keys[0]}
	for i := 0; i < len(argv); i += 3 {
		get = append(get, argv[i])
	}
	reply, err := call(get...)
	if err != nil {
		return 0, err
	}
	held, _ := reply.([]any)
	if len(held) != len(argv)/3 {
		return 0, fmt.Errorf("HMGET answered %d fields for %d", len(held), len(argv)/3)
	}
	cur := make(map[string]string, len(held)) // what each field holds now
	for i := 0; i < len(argv); i += 3 {
		if s, ok := held[i/3].(string); ok {
			if _, seen := cur[argv[i]]; !seen {
				cur[argv[i]] = s
			}
		}
	}
	set := []string{"HSET", keys[0]}
	for i := 0; i < len(argv); i += 3 {
		field, rev := argv[i], argv[i+1]
		if s, ok := cur[field]; ok {
			if m := leadingRev.FindStringSubmatch(s); m != nil {
				have, _ := luaNumber(m[1])
				want, ok := luaNumber(rev)
				if !ok {
					return 0, errNotNumber
				}
				if have > want {
					continue // keep the newer row
				}
			}
		}
		cur[field] = rev + "|" + argv[i+2]
		set = append(set, field, cur[field])
	}
	if len(set) > 2 {
		if _, err := call(set...); err != nil {
			return 0, err
		}
	}
	return 1, nil
}
