package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// This file checks a configuration and words what is wrong with it in
// terms of settings: each named by its config-file key, the running
// role's flag and its environment variable.

// decodeError rewrites the decoder's errors in terms of settings.
func decodeError(r role, err error) error {
	var errs []error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case *mapstructure.DecodeError:
			errs = append(errs, settingError(r, e)...)
		case interface{ Unwrap() error }: // the decoder's "decoding failed" wrapper
			walk(e.Unwrap())
		default:
			errs = append(errs, err)
		}
	}
	walk(err)
	return problemList(errs)
}

func settingError(r role, de *mapstructure.DecodeError) []error {
	if keys, ok := strings.CutPrefix(de.Unwrap().Error(), "has invalid keys: "); ok {
		var errs []error
		for _, k := range strings.Split(keys, ", ") {
			if de.Name() != "" {
				k = de.Name() + "." + k
			}
			errs = append(errs, fmt.Errorf("%s: no such setting", k))
		}
		return errs
	}
	if _, ok := settingOf(de.Name()); !ok {
		return []error{fmt.Errorf("%s: %w", de.Name(), de.Unwrap())}
	}
	var pe *mapstructure.ParseError
	if errors.As(de, &pe) {
		return []error{fmt.Errorf("%s: %q is not %s", describe(r, de.Name()), fmt.Sprint(pe.Value), kindOf(de.Name()))}
	}
	return []error{fmt.Errorf("%s: want %s (%w)", describe(r, de.Name()), kindOf(de.Name()), de.Unwrap())}
}

// problemList is nil, or an error that lists errs.
func problemList(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return configErrors(errs)
}

// configErrors is everything wrong with a configuration, one per line
// when there are several.
type configErrors []error

func (e configErrors) Error() string {
	if len(e) == 1 {
		return "configuration: " + e[0].Error()
	}
	var b strings.Builder
	b.WriteString("configuration:")
	for _, err := range e {
		b.WriteString("\n  " + err.Error())
	}
	return b.String()
}

func (e configErrors) Unwrap() []error { return e }

func kindOf(key string) string {
	s, _ := settingOf(key)
	switch s.def.(type) {
	case int, int64:
		return "a whole number"
	case bool:
		return "true or false"
	case time.Duration:
		return "a duration such as 30s"
	}
	return "a value of its kind"
}

// describe names a setting as a person may have given it: its key in the
// config file, r's flag and the environment variable.
func describe(r role, key string) string {
	var names []string
	for _, b := range flagsOf(r) {
		if b.key == key {
			names = append(names, "--"+b.flag)
		}
	}
	if s, ok := settingOf(key); ok && s.env != "" {
		names = append(names, s.env)
	}
	if len(names) == 0 {
		return key
	}
	return key + " (" + strings.Join(names, ", ") + ")"
}

// problems collects what is wrong with a configuration.
type problems struct {
	r    role
	errs []error
}

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", describe(p.r, key), fmt.Sprintf(format, args...)))
}

// addr checks a host:port listen address; minPort is -1 where the
// embedded NATS takes -1 for "any free port".
func (p *problems) addr(key, v string, minPort int) {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "%q is not host:port", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < minPort || n > 65535 {
		p.add(key, "%q: port %q is not a port number", v, port)
	}
}

func (p *problems) atLeast(key string, v, lo int) {
	if v < lo {
		p.add(key, "want at least %d, got %d", lo, v)
	}
}

func (p *problems) required(key, v string) {
	if strings.TrimSpace(v) == "" {
		p.add(key, "required by the %s role", p.r)
	}
}

func (p *problems) duration(key string, v, lo time.Duration) {
	if v < lo {
		p.add(key, "want at least %s, got %s", lo, v)
	}
}

// validate checks the settings r uses, and reports every bad one.
func (c *Config) validate(r role) error {
	p := &problems{r: r}
	if _, err := parseLevel(c.LogLevel); err != nil {
		p.add("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if n := c.Topology.Replicas; n < 1 || n > 5 {
		p.add("topology.replicas", "want 1 to 5, got %d", n)
	}
	p.duration("topology.ack_wait", c.Topology.AckWait, time.Second)
	p.duration("topology.task_ack_wait", c.Topology.TaskAckWait, time.Second)
	if w, most := c.Workers.CreateWindow, c.Topology.AckWait/2; w < 0 || (most >= time.Second/2 && w > most) {
		// a held first commit must be written well before its submit
		// command would be delivered again
		p.add("workers.create_window", "want 0 to half of topology.ack_wait (%s), got %s", most, w)
	}
	p.duration("topology.job_retention", c.Topology.JobRetention, 2*schemas.RetentionMargin)
	if n := c.Topology.ResultPartitions; n < 0 || n > schemas.MaxResultPartitions {
		p.add("topology.result_partitions", "want 0 to %d, got %d", schemas.MaxResultPartitions, n)
	}
	if r != roleServe {
		p.required("nats.url", c.NATS.URL)
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		p.add("nats.tls_cert", "a certificate and its key (nats.tls_key) go together")
	}
	if r == roleServe && c.NATS.TLSCA != "" && c.NATS.TLSCert == "" {
		p.add("nats.tls_ca", "client certificates are checked only with TLS on: set nats.tls_cert and nats.tls_key too")
	}
	if d := c.Debug.ReleaseMemory; d < 0 || (d > 0 && d < time.Second) {
		p.add("debug.release_memory", "%s: 0 (off) or at least 1s (each release is a garbage collection)", d)
	}
	if a := c.Debug.PprofAddr; a != "" {
		p.addr("debug.pprof_addr", a, 1)
		if host, _, err := net.SplitHostPort(a); err == nil {
			if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
				p.add("debug.pprof_addr", "%q: profiles are served on a loopback address only (127.0.0.1 or [::1])", a)
			}
		}
	}
	if c.Metrics.Addr != "" && (r == roleWorker || r == roleAgent) {
		p.addr("metrics.addr", c.Metrics.Addr, 0)
	}
	if r == roleServe || r == roleWorker {
		if _, err := parsePrefixes(c.Outbound.Allow); err != nil {
			p.add("outbound.allow", "%v", err)
		}
	}
	if r == roleServe || r == roleAPI {
		if _, err := parseGrants(c.API.OctansAllow); err != nil {
			p.add("api.octans_allow", "%v", err)
		}
		p.atLeast("api.rate", c.API.Rate, 0)
		p.atLeast("api.burst", c.API.Burst, 1)
	}
	switch r {
	case roleServe:
		p.required("data_dir", c.DataDir)
		p.addr("http.addr", c.HTTP.Addr, 0)
		p.addr("nats.addr", c.NATS.Addr, -1)
		p.duration("nats.sync", c.NATS.Sync, 0)
		p.atLeast("workers.count", c.Workers.Count, 0)
		if !c.Agent.Disabled {
			c.validateAgent(p)
		}
	case roleAPI:
		p.addr("http.addr", c.HTTP.Addr, 0)
		p.required("redis.url", string(c.Redis.URL))
		p.required("api.token", string(c.API.Token))
	case roleClient:
		if u, err := url.Parse(c.Client.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("client.api_url", "%q is not an http(s) URL", c.Client.APIURL)
		}
	case roleWorker:
		p.required("redis.url", string(c.Redis.URL))
		p.atLeast("workers.count", c.Workers.Count, 1)
	case roleAgent:
		c.validateEnrol(p)
		if c.Simulate.Agents == 0 {
			p.required("agent.data_dir", c.Agent.DataDir)
			c.validateAgent(p)
			break
		}
		p.atLeast("simulate.agents", c.Simulate.Agents, 0)
		if !schemas.ValidAgentID(c.Simulate.Pool) {
			p.add("simulate.pool", "%q: use 1-64 letters, digits, '-' or '_'", c.Simulate.Pool)
		}
		if _, err := netip.ParseAddr(c.Simulate.FirstIP); err != nil {
			p.add("simulate.first_ip", "%q is not an IP address", c.Simulate.FirstIP)
		}
	}
	return problemList(p.errs)
}

func (c *Config) validateAgent(p *problems) {
	a := c.Agent
	if a.ID != "" && !schemas.ValidAgentID(a.ID) {
		p.add("agent.id", "%q: use 1-64 letters, digits, '-' or '_'", a.ID)
	}
	if _, err := netip.ParseAddr(a.IP); err != nil {
		p.add("agent.ip", "%q is not an IP address", a.IP)
	}
	if a.CloudID < 0 {
		p.add("agent.cloud_id", "must not be negative, got %d", a.CloudID)
	}
	if a.HostID < 0 {
		p.add("agent.host_id", "must not be negative, got %d", a.HostID)
	}
	if _, err := parseLabels(a.Labels); err != nil {
		p.add("agent.labels", "%v", err)
	}
	p.atLeast("agent.slots", a.Slots, 1)
	p.duration("agent.shutdown_grace", a.ShutdownGrace, 0)
}

// parseLabels reads "k=v" labels.
func parseLabels(labels []string) (map[string]string, error) {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want k=v", l)
		}
		m[k] = v
	}
	return m, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// parsePrefixes reads a comma-separated list of address prefixes; a bare
// address is its own /32 or /128.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or a prefix such as 10.1.0.0/16", f)
		}
		out = append(out, pr.Masked())
	}
	return out, nil
}

// parseGrants reads the octans network grants, comma-separated.
func parseGrants(s string) ([]api.NetworkGrant, error) {
	var out []api.NetworkGrant
	for _, g := range strings.Split(s, ",") {
		if strings.TrimSpace(g) == "" {
			continue
		}
		ng, err := api.ParseNetworkGrant(g)
		if err != nil {
			return nil, err
		}
		out = append(out, ng)
	}
	return out, nil
}
