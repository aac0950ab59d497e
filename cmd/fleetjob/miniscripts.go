package main

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"

	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// The in-process Redis runs the status cache's scripts as their Go twins
// (statuscache/native.go). miniredis runs each EVALSHA in a new Lua
// interpreter with its libraries loaded afresh: ~350 µs and ~235 KB of
// garbage per call, two or three calls per job, which made the in-process
// Redis most of serve's CPU per job and most of its heap's peak in a
// burst. A pre-hook (miniredis's public server.SetPreHook) takes an
// EVALSHA of a script that has a twin and runs the twin under the server's
// lock, its commands dispatched as miniredis dispatches a Lua script's
// redis.call: with a connection context marked nested, whose commands
// run under the lock already held. That context is miniredis's unexported
// connCtx, made by reflection; if a release changes it, the hook is not
// installed (the scripts run in Lua, slower and the same) and
// TestInProcessRedisRunsScriptsInGo fails.
//
// Anything else the hook lets through to miniredis: other scripts, a
// client that has not authenticated (miniredis answers NOAUTH), one inside
// MULTI or subscribed.

// twinRuns counts the script calls the hook answered (for its test).
var twinRuns atomic.Int64

// connCtxFields are the fields of miniredis's connection context that
// the hook reads or sets.
var connCtxFields = []string{"nested", "authenticated", "transaction", "subscriber"}

// nestedCaller dispatches commands inside a script run; it is used only
// under the server's lock.
type nestedCaller struct {
	srv  *server.Server
	peer *server.Peer
	buf  bytes.Buffer
	w    *bufio.Writer
	r    *bufio.Reader
}

func (n *nestedCaller) call(args ...string) (any, error) {
	n.buf.Reset()
	n.srv.Dispatch(n.peer, args)
	n.w.Flush()
	n.r.Reset(&n.buf)
	return server.ParseReply(n.r)
}

// connCtxType is the type of miniredis's connection context, as a peer's
// first command leaves it, if it has the fields the hook uses.
func connCtxType(srv *server.Server) (reflect.Type, bool) {
	p := server.NewPeer(bufio.NewWriter(io.Discard))
	srv.Dispatch(p, []string{"PING"})
	v := reflect.ValueOf(p.Ctx)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	t := v.Elem().Type()
	for _, name := range connCtxFields {
		if _, ok := t.FieldByName(name); !ok {
			return nil, false
		}
	}
	return t, true
}

// setBool sets an unexported bool field of the struct v points to.
func setBool(v reflect.Value, name string, b bool) bool {
	f := v.Elem().FieldByName(name)
	if f.Kind() != reflect.Bool {
		return false
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBool(b)
	return true
}

// plainClient reports whether a peer has authenticated and is neither in
// a transaction nor subscribed: a client whose EVALSHA runs at once.
func plainClient(c *server.Peer, t reflect.Type) bool {
	v := reflect.ValueOf(c.Ctx)
	if !v.IsValid() || v.Type() != reflect.PointerTo(t) {
		return false
	}
	e := v.Elem()
	return e.FieldByName("authenticated").Bool() && !e.FieldByName("nested").Bool() &&
		e.FieldByName("transaction").IsNil() && e.FieldByName("subscriber").IsNil()
}

// runScriptsInGo installs the hook on mr (started, with a password) and
// reports whether it could.
func runScriptsInGo(mr *miniredis.Miniredis) bool {
	srv := mr.Server()
	t, ok := connCtxType(srv)
	if !ok {
		return false
	}
	nested := reflect.New(t)
	if !setBool(nested, "nested", true) || !setBool(nested, "authenticated", true) {
		return false
	}
	n := &nestedCaller{srv: srv}
	n.w, n.r = bufio.NewWriter(&n.buf), bufio.NewReader(&n.buf)
	n.peer = server.NewPeer(n.w)
	n.peer.Ctx = nested.Interface()
	twins := map[string]func(statuscache.Call, []string, []string) (int, error){}
	for _, s := range statuscache.NativeScripts() {
		twins[s.SHA] = s.Run
	}
	srv.SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if cmd != "EVALSHA" || len(args) < 2 {
			return false
		}
		run, ok := twins[strings.ToLower(args[0])]
		if !ok || !plainClient(c, t) {
			return false
		}
		nk, err := strconv.Atoi(args[1])
		if err != nil || nk < 0 || nk > len(args)-2 {
			return false // miniredis answers the error
		}
		mr.Lock()
		res, err := run(n.call, args[2:2+nk], args[2+nk:])
		mr.Unlock()
		twinRuns.Add(1)
		if err != nil {
			c.WriteError("ERR Error running script (Go twin of " + args[0] + "): " + err.Error())
			return true
		}
		c.WriteInt(res)
		return true
	})
	return true
}
