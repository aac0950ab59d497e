package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/schemas"
)

// load parses args as the command line of role r and reads its
// configuration with environ as the environment.
func load(t *testing.T, r role, environ []string, args ...string) (Config, error) {
	t.Helper()
	cmd, rest, err := newRoot(environ).Find(append([]string{string(r)}, args...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("flags %v: %v", args, err)
	}
	return loadConfig(r, cmd.Flags(), environ)
}

func mustLoad(t *testing.T, r role, environ []string, args ...string) Config {
	t.Helper()
	c, err := load(t, r, environ, args...)
	if err != nil {
		t.Fatalf("%s %v with %v: %v", r, args, environ, err)
	}
	return c
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fleetjob.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigPrecedence: defaults < file < environment < flags, for a
// string, a number and a duration.
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "http:\n  addr: 127.0.0.1:1001\nworkers:\n  count: 5\ntopology:\n  ack_wait: 5s\n")
	env := []string{"FLEETJOB_HTTP_ADDR=127.0.0.1:1002", "FLEETJOB_ACK_WAIT=6s"}
	type got struct {
		Addr    string
		Workers int
		AckWait time.Duration
	}
	for _, c := range []struct {
		name    string
		environ []string
		args    []string
		want    got
	}{
		{"defaults", nil, nil, got{"127.0.0.1:8080", 2, 30 * time.Second}},
		{"file over defaults", nil, []string{"--config", file}, got{"127.0.0.1:1001", 5, 5 * time.Second}},
		{"file named by FLEETJOB_CONFIG", []string{"FLEETJOB_CONFIG=" + file}, nil, got{"127.0.0.1:1001", 5, 5 * time.Second}},
		{"env over file", env, []string{"--config", file}, got{"127.0.0.1:1002", 5, 6 * time.Second}},
		{"env over defaults", env, nil, got{"127.0.0.1:1002", 2, 6 * time.Second}},
		{"flags over env and file", env, []string{"--config", file, "--http-addr", "127.0.0.1:1003", "--workers", "7"}, got{"127.0.0.1:1003", 7, 6 * time.Second}},
		{"flags over defaults", nil, []string{"--http-addr", "127.0.0.1:1003"}, got{"127.0.0.1:1003", 2, 30 * time.Second}},
		{"a flag given its default value still wins", env, []string{"--http-addr", "127.0.0.1:8080"}, got{"127.0.0.1:8080", 2, 6 * time.Second}},
		{"an empty variable is unset", []string{"FLEETJOB_HTTP_ADDR="}, []string{"--config", file}, got{"127.0.0.1:1001", 5, 5 * time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := mustLoad(t, roleServe, c.environ, c.args...)
			if diff := cmp.Diff(got{cfg.HTTP.Addr, cfg.Workers.Count, cfg.Topology.AckWait}, c.want); diff != "" {
				t.Errorf("(-got +want)\n%s", diff)
			}
		})
	}
}

// TestConfigEnvironment: every environment variable fleetjob has read
// keeps its name and meaning.
func TestConfigEnvironment(t *testing.T) {
	environ := []string{
		"FLEETJOB_LOG_LEVEL=debug", "FLEETJOB_DATA_DIR=/srv/fj", "FLEETJOB_HTTP_ADDR=0.0.0.0:80",
		"FLEETJOB_NATS_ADDR=0.0.0.0:4222", "NATS_URL=nats://n1:4222,nats://n2:4222", "REDIS_URL=redis://r:6379/1",
		"FLEETJOB_TOKEN=admin", "FLEETJOB_OCTANS_ALLOW=10.1.0.0/16=biz:2", "FLEETJOB_API_RATE=7", "FLEETJOB_API_BURST=9", "FLEETJOB_RISK_RULES=/etc/rules.json",
		"FLEETJOB_AGENT_DIR=/var/lib/fj-agent", "FLEETJOB_REPLICAS=3", "FLEETJOB_ACK_WAIT=3s", "FLEETJOB_TASK_ACK_WAIT=4s",
		"FLEETJOB_SPEC_CACHE=99", "UNRELATED=1",
	}
	got := mustLoad(t, roleAgent, environ)
	want := mustLoad(t, roleAgent, nil)
	want.LogLevel, want.DataDir, want.HTTP.Addr = "debug", "/srv/fj", "0.0.0.0:80"
	want.NATS.Addr, want.NATS.URL, want.Redis.URL = "0.0.0.0:4222", "nats://n1:4222,nats://n2:4222", "redis://r:6379/1"
	want.API = apiConfig{Token: "admin", OctansAllow: "10.1.0.0/16=biz:2", Rate: 7, Burst: 9, RiskRules: "/etc/rules.json"}
	want.Agent.DataDir = "/var/lib/fj-agent"
	want.Workers.SpecCache = 99
	want.Topology = topologyConfig{Replicas: 3, AckWait: 3 * time.Second, TaskAckWait: 4 * time.Second, JobRetention: schemas.DefaultTopology().JobRetention, ResultPartitions: schemas.DefaultTopology().ResultPartitions}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want)\n%s", diff)
	}
	top := got.topology()
	if top.Replicas != 3 || top.AckWait != 3*time.Second || top.TaskWait != 4*time.Second {
		t.Errorf("topology %+v does not carry the settings", top)
	}
	if def := schemas.DefaultTopology(); top.Dedupe != def.Dedupe || top.WorkDedupe != def.WorkDedupe || top.MaxDeliver != def.MaxDeliver {
		t.Errorf("topology %+v lost the shipped defaults", top)
	}
}

// TestConfigFlags: every flag of every role keeps its name and meaning.
func TestConfigFlags(t *testing.T) {
	for _, c := range []struct {
		role role
		args []string
		edit func(*Config)
	}{
		{roleServe, []string{
			"--log-level", "warn", "--http-addr", "0.0.0.0:80", "--nats-addr", "0.0.0.0:4222", "--data-dir", "/srv/fj",
			"--workers", "3", "--nats-sync", "1s", "--nats-sync-always", "--no-agent", "--agent-id", "me", "--agent-ip", "10.0.0.7",
			"--agent-cloud-id", "2", "--agent-host-id", "42", "--agent-label", "a=1", "--agent-label", "b=2",
			"--agent-slots", "8", "--agent-shutdown-grace", "3s",
		}, func(c *Config) {
			c.LogLevel, c.HTTP.Addr, c.NATS.Addr, c.DataDir, c.Workers.Count = "warn", "0.0.0.0:80", "0.0.0.0:4222", "/srv/fj", 3
			c.NATS.Sync, c.NATS.SyncAlways = time.Second, true
			c.Agent = agentConfig{Disabled: true, ID: "me", IP: "10.0.0.7", CloudID: 2, HostID: 42, Labels: []string{"a=1", "b=2"},
				Slots: 8, ShutdownGrace: 3 * time.Second, DataDir: c.Agent.DataDir}
		}},
		{roleAPI, []string{"--http-addr", "0.0.0.0:80"}, func(c *Config) { c.HTTP.Addr = "0.0.0.0:80" }},
		{roleWorker, []string{"--workers", "4", "--metrics-addr", ":9101"}, func(c *Config) { c.Workers.Count, c.Metrics.Addr = 4, ":9101" }},
		{roleAgent, []string{
			"--id", "web-2", "--ip", "127.0.0.2", "--cloud-id", "3", "--host-id", "7", "--label", "role=web", "--slots", "2",
			"--shutdown-grace", "1m", "--data-dir", "/var/lib/a", "--metrics-addr", ":9102",
		}, func(c *Config) {
			c.Agent = agentConfig{ID: "web-2", IP: "127.0.0.2", CloudID: 3, HostID: 7, Labels: []string{"role=web"}, Slots: 2,
				ShutdownGrace: time.Minute, DataDir: "/var/lib/a"}
			c.Metrics.Addr = ":9102"
		}},
		{roleAgent, []string{"--simulate", "100", "--sim-pool", "sim1", "--sim-first-ip", "10.9.0.1"}, func(c *Config) {
			c.Simulate = simulateConfig{Agents: 100, Pool: "sim1", FirstIP: "10.9.0.1"}
		}},
	} {
		t.Run(string(c.role), func(t *testing.T) {
			// api and worker need their required settings from somewhere
			environ := []string{"REDIS_URL=redis://r:6379/0", "FLEETJOB_TOKEN=t"}
			got := mustLoad(t, c.role, environ, c.args...)
			want := mustLoad(t, c.role, environ)
			c.edit(&want)
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("(-got +want)\n%s", diff)
			}
		})
	}
}

// TestConfigFile reads every kind of value from a file, under the keys
// the README documents.
func TestConfigFile(t *testing.T) {
	file := writeFile(t, `
log_level: error
nats: {url: "nats://a:4222", sync: 2m, sync_always: true}
redis: {url: "redis://r:6379/2"}
api: {token: tok, octans_allow: "10.2.0.0/16", rate: 5, burst: 6, risk_rules: /etc/r.json}
metrics: {addr: ":9100"}
agent:
  id: box
  ip: 10.1.2.3
  cloud_id: 4
  labels: [zone=a, rack=7]
  slots: 16
  shutdown_grace: 20s
  data_dir: /var/lib/box
topology: {replicas: 3, ack_wait: 45s, task_ack_wait: 50s}
`)
	got := mustLoad(t, roleAgent, nil, "--config", file)
	want := mustLoad(t, roleAgent, nil)
	want.LogLevel = "error"
	want.NATS.URL, want.NATS.Sync, want.NATS.SyncAlways = "nats://a:4222", 2*time.Minute, true
	want.Redis.URL, want.Metrics.Addr = "redis://r:6379/2", ":9100"
	want.API = apiConfig{Token: "tok", OctansAllow: "10.2.0.0/16", Rate: 5, Burst: 6, RiskRules: "/etc/r.json"}
	want.Agent = agentConfig{ID: "box", IP: "10.1.2.3", CloudID: 4, Labels: []string{"zone=a", "rack=7"}, Slots: 16,
		ShutdownGrace: 20 * time.Second, DataDir: "/var/lib/box"}
	want.Topology = topologyConfig{Replicas: 3, AckWait: 45 * time.Second, TaskAckWait: 50 * time.Second, JobRetention: schemas.DefaultTopology().JobRetention, ResultPartitions: schemas.DefaultTopology().ResultPartitions}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want)\n%s", diff)
	}
}

// TestConfigErrors: a bad setting is refused with a message that names it
// the ways a person may have given it, and every bad setting is listed.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		role    role
		environ []string
		args    []string
		file    string
		want    []string
	}{
		{"replicas not a number", roleWorker, []string{"FLEETJOB_REPLICAS=three", "REDIS_URL=redis://r"}, nil, "",
			[]string{`topology.replicas (FLEETJOB_REPLICAS): "three" is not a whole number`}},
		{"octans networks", roleAPI, []string{"FLEETJOB_OCTANS_ALLOW=10.1.0.0/16=biz:2, office", "REDIS_URL=redis://r", "NATS_URL=nats://n", "FLEETJOB_TOKEN=t"}, nil, "",
			[]string{`api.octans_allow (--octans-allow, FLEETJOB_OCTANS_ALLOW): "office" is not a network`}},
		{"outbound allow-list", roleWorker, []string{"FLEETJOB_OUTBOUND_ALLOW=10.1.0.0/16, office", "REDIS_URL=redis://r"}, nil, "",
			[]string{`outbound.allow (--outbound-allow, FLEETJOB_OUTBOUND_ALLOW): "office" is not an address or a prefix such as 10.1.0.0/16`}},
		{"replicas out of range", roleAgent, []string{"FLEETJOB_REPLICAS=7"}, nil, "",
			[]string{"topology.replicas (FLEETJOB_REPLICAS): want 1 to 5, got 7"}},
		{"ack wait too short", roleAgent, []string{"FLEETJOB_ACK_WAIT=10ms", "FLEETJOB_TASK_ACK_WAIT=0s"}, nil, "",
			[]string{"topology.ack_wait (FLEETJOB_ACK_WAIT): want at least 1s, got 10ms", "topology.task_ack_wait (FLEETJOB_TASK_ACK_WAIT): want at least 1s, got 0s"}},
		{"ack wait not a duration", roleAgent, []string{"FLEETJOB_ACK_WAIT=soon"}, nil, "",
			[]string{"topology.ack_wait (FLEETJOB_ACK_WAIT): want a duration such as 30s"}},
		{"api needs redis and a token", roleAPI, nil, nil, "",
			[]string{"redis.url (REDIS_URL): required by the api role", "api.token (FLEETJOB_TOKEN): required by the api role"}},
		{"worker needs redis", roleWorker, nil, nil, "", []string{"redis.url (REDIS_URL): required by the worker role"}},
		{"no workers", roleWorker, []string{"REDIS_URL=redis://r"}, []string{"--workers", "0"}, "",
			[]string{"workers.count (--workers): want at least 1, got 0"}},
		{"log level", roleServe, []string{"FLEETJOB_LOG_LEVEL=loud"}, nil, "",
			[]string{`log_level (--log-level, FLEETJOB_LOG_LEVEL): "loud" is not debug, info, warn or error`}},
		{"addresses", roleServe, nil, []string{"--http-addr", "8080", "--nats-addr", "127.0.0.1:http"}, "",
			[]string{`http.addr (--http-addr, FLEETJOB_HTTP_ADDR): "8080" is not host:port`, `nats.addr (--nats-addr, FLEETJOB_NATS_ADDR): "127.0.0.1:http": port "http" is not a port number`}},
		{"serve's agent", roleServe, nil, []string{"--agent-ip", "localhost", "--agent-label", "web", "--agent-slots", "0", "--agent-id", "a b"}, "",
			[]string{`agent.ip (--agent-ip): "localhost" is not an IP address`, `agent.labels (--agent-label): "web": want k=v`,
				"agent.slots (--agent-slots): want at least 1, got 0", `agent.id (--agent-id): "a b": use 1-64 letters`}},
		{"profiles on loopback only", roleServe, []string{"FLEETJOB_PPROF_ADDR=0.0.0.0:6060"}, nil, "",
			[]string{`debug.pprof_addr (FLEETJOB_PPROF_ADDR): "0.0.0.0:6060": profiles are served on a loopback address only`}},
		{"profiles on loopback", roleServe, []string{"FLEETJOB_PPROF_ADDR=127.0.0.1:6060"}, nil, "", nil},
		{"memory released too often", roleServe, []string{"FLEETJOB_RELEASE_MEMORY=100ms"}, nil, "",
			[]string{"debug.release_memory (FLEETJOB_RELEASE_MEMORY): 100ms: 0 (off) or at least 1s"}},
		{"memory left to the runtime", roleServe, []string{"FLEETJOB_RELEASE_MEMORY=0"}, nil, "", nil},
		{"no agent, no agent checks", roleServe, nil, []string{"--no-agent", "--agent-ip", "localhost"}, "", nil},
		{"agent", roleAgent, nil, []string{"--ip", "10.0.0", "--cloud-id", "-1", "--data-dir", ""}, "",
			[]string{`agent.ip (--ip): "10.0.0" is not an IP address`, "agent.cloud_id (--cloud-id): must not be negative, got -1", "agent.data_dir (--data-dir, FLEETJOB_AGENT_DIR): required by the agent role"}},
		{"simulator", roleAgent, nil, []string{"--simulate", "10", "--sim-first-ip", "x", "--sim-pool", "a.b"}, "",
			[]string{`simulate.first_ip (--sim-first-ip): "x" is not an IP address`, `simulate.pool (--sim-pool): "a.b": use 1-64`}},
		{"file: unknown key and bad value", roleServe, nil, nil, "agent:\n  lables: [a=b]\n  slots: many\n",
			[]string{"agent.lables: no such setting", `agent.slots (--agent-slots): "many" is not a whole number`}},
		{"file: missing", roleServe, nil, []string{"--config", "/nonexistent/fleetjob.yaml"}, "",
			[]string{"config file /nonexistent/fleetjob.yaml: open /nonexistent/fleetjob.yaml: no such file or directory"}},
		{"file: not YAML", roleServe, nil, nil, "http: [", []string{"config file "}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.file != "" {
				args = append(args, "--config", writeFile(t, c.file))
			}
			_, err := load(t, c.role, c.environ, args...)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; len(c.want) > 1 && n != len(c.want)+1 {
				t.Errorf("error %q: %d lines, want a heading and %d problems", err, n, len(c.want))
			}
		})
	}
}

// TestSecretsAreRedacted: tokens and the Redis URL never reach a log.
func TestSecretsAreRedacted(t *testing.T) {
	var b strings.Builder
	cfg := mustLoad(t, roleAPI, []string{"FLEETJOB_TOKEN=hunter2", "REDIS_URL=redis://u:pw@r:6379/0"})
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "api", cfg.API, "redis", cfg.Redis.URL, "token", cfg.API.Token)
	if strings.Contains(b.String(), "hunter2") || strings.Contains(b.String(), "pw@") {
		t.Errorf("a secret was logged: %s", b.String())
	}
}
