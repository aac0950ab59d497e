package main

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unsafe"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"

	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// The in-process Redis runs the status cache's scripts as their Go twins
// (statuscache/native.go). miniredis runs each EVALSHA in a new Lua
// interpreter with its libraries loaded afresh: ~300 µs and ~235 KB of
// garbage per call, two or three calls per job, which made the in-process
// Redis most of serve's CPU per job and a quarter of its live heap at a
// burst's peak (51 of 211 MB). A pre-hook (miniredis's public server.SetPreHook) takes an
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

// connCtx is the layout of miniredis's connection context: its type, as a
// peer's first command leaves it, and the fields the hook reads or sets,
// looked up once.
type connCtx struct {
	typ                                            reflect.Type
	nested, authenticated, transaction, subscriber []int
}

// connCtxOf finds miniredis's connection context, if it has the fields the
// hook uses, of the kinds it expects.
func connCtxOf(srv *server.Server) (connCtx, bool) {
	p := server.NewPeer(bufio.NewWriter(io.Discard))
	srv.Dispatch(p, []string{"PING"})
	v := reflect.ValueOf(p.Ctx)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return connCtx{}, false
	}
	c := connCtx{typ: v.Elem().Type()}
	for _, f := range []struct {
		name string
		kind reflect.Kind
		to   *[]int
	}{
		{"nested", reflect.Bool, &c.nested}, {"authenticated", reflect.Bool, &c.authenticated},
		{"transaction", reflect.Slice, &c.transaction}, {"subscriber", reflect.Pointer, &c.subscriber},
	} {
		sf, ok := c.typ.FieldByName(f.name)
		if !ok || sf.Type.Kind() != f.kind {
			return connCtx{}, false
		}
		*f.to = sf.Index
	}
	return c, true
}

// nestedCtx is a new context whose commands run as a Lua script's do:
// under the lock the caller holds, already authenticated.
func (c connCtx) nestedCtx() any {
	v := reflect.New(c.typ).Elem()
	for _, idx := range [][]int{c.nested, c.authenticated} {
		f := v.FieldByIndex(idx)
		reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBool(true)
	}
	return v.Addr().Interface()
}

// plain reports whether a peer has authenticated and is neither in a
// transaction nor subscribed: a client whose EVALSHA runs at once.
func (c connCtx) plain(p *server.Peer) bool {
	v := reflect.ValueOf(p.Ctx)
	if !v.IsValid() || v.Type() != reflect.PointerTo(c.typ) {
		return false
	}
	e := v.Elem()
	return e.FieldByIndex(c.authenticated).Bool() && !e.FieldByIndex(c.nested).Bool() &&
		e.FieldByIndex(c.transaction).IsNil() && e.FieldByIndex(c.subscriber).IsNil()
}

// runScriptsInGo installs the hook on mr (started, with a password) and
// reports whether it could.
func runScriptsInGo(mr *miniredis.Miniredis) bool {
	srv := mr.Server()
	cc, ok := connCtxOf(srv)
	if !ok {
		return false
	}
	n := &nestedCaller{srv: srv}
	n.w, n.r = bufio.NewWriter(&n.buf), bufio.NewReader(&n.buf)
	n.peer = server.NewPeer(n.w)
	n.peer.Ctx = cc.nestedCtx()
	twins := map[string]func(statuscache.Call, []string, []string) (int, error){}
	for _, s := range statuscache.NativeScripts() {
		twins[s.SHA] = s.Run
	}
	srv.SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if cmd != "EVALSHA" || len(args) < 2 {
			return false
		}
		run, ok := twins[strings.ToLower(args[0])]
		if !ok || !cc.plain(c) {
			return false
		}
		nk, err := strconv.Atoi(args[1])
		if err != nil || nk < 0 || nk > len(args)-2 {
			return false // miniredis answers the error
		}
		mr.Lock()
		res, err := run(n.call, args[2:2+nk], args[2+nk:])
		mr.Unlock()
		if err != nil {
			c.WriteError("ERR Error running script (Go twin of " + args[0] + "): " + err.Error())
			return true
		}
		c.WriteInt(res)
		return true
	})
	return true
}
