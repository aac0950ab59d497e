package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/orchestrator"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Config is every setting of the binary. loadConfig reads it once, from
// defaults, an optional YAML file, the environment and the command line,
// and validates it for the role that runs; the parts it starts get plain
// values from it. Its koanf tags are the keys of the config file, and
// the settings table below has one row per key.
type Config struct {
	LogLevel string         `koanf:"log_level"`
	DataDir  string         `koanf:"data_dir"`
	HTTP     httpConfig     `koanf:"http"`
	NATS     natsConfig     `koanf:"nats"`
	Redis    redisConfig    `koanf:"redis"`
	API      apiConfig      `koanf:"api"`
	Workers  workersConfig  `koanf:"workers"`
	Metrics  metricsConfig  `koanf:"metrics"`
	Agent    agentConfig    `koanf:"agent"`
	Simulate simulateConfig `koanf:"simulate"`
	Topology topologyConfig `koanf:"topology"`
	Outbound outboundConfig `koanf:"outbound"`
	Enrol    enrolConfig    `koanf:"enrol"`
	Client   clientConfig   `koanf:"client"`
	Debug    debugConfig    `koanf:"debug"`
}

type debugConfig struct {
	PprofAddr     string        `koanf:"pprof_addr"`
	ReleaseMemory time.Duration `koanf:"release_memory"`
}

type clientConfig struct {
	APIURL string `koanf:"api_url"`
}

type outboundConfig struct {
	Allow string `koanf:"allow"` // comma-separated prefixes
}

type httpConfig struct {
	Addr    string `koanf:"addr"`
	TLSCert string `koanf:"tls_cert"`
	TLSKey  string `koanf:"tls_key"`
}

type natsConfig struct {
	URL        string        `koanf:"url"`
	Addr       string        `koanf:"addr"`
	Sync       time.Duration `koanf:"sync"`
	SyncAlways bool          `koanf:"sync_always"`
	Creds      string        `koanf:"creds"`
	TLSCert    string        `koanf:"tls_cert"`
	TLSKey     string        `koanf:"tls_key"`
	TLSCA      string        `koanf:"tls_ca"`
	AuthDir    string        `koanf:"auth_dir"`
}

type redisConfig struct {
	URL          secret        `koanf:"url"` // may hold a password
	KeepFinished int           `koanf:"keep_finished"`
	KeepFor      time.Duration `koanf:"keep_for"`
}

type apiConfig struct {
	Token       secret `koanf:"token"`
	OctansAllow string `koanf:"octans_allow"` // comma-separated network grants
	Rate        int    `koanf:"rate"`
	Burst       int    `koanf:"burst"`
	RiskRules   string `koanf:"risk_rules"`
}

type workersConfig struct {
	Count        int           `koanf:"count"`
	SpecCache    int           `koanf:"spec_cache"`
	CreateWindow time.Duration `koanf:"create_window"`
}

type metricsConfig struct {
	Addr string `koanf:"addr"`
}

type agentConfig struct {
	Disabled      bool          `koanf:"disabled"`
	ID            string        `koanf:"id"`
	IP            string        `koanf:"ip"`
	CloudID       int64         `koanf:"cloud_id"`
	HostID        int64         `koanf:"host_id"`
	Labels        []string      `koanf:"labels"`
	Slots         int           `koanf:"slots"`
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
	DataDir       string        `koanf:"data_dir"`
}

type simulateConfig struct {
	Agents  int    `koanf:"agents"`
	Pool    string `koanf:"pool"`
	FirstIP string `koanf:"first_ip"`
}

type topologyConfig struct {
	Replicas    int           `koanf:"replicas"`
	AckWait     time.Duration `koanf:"ack_wait"`
	TaskAckWait time.Duration `koanf:"task_ack_wait"`
	// JobRetention applies to streams and buckets created with it.
	JobRetention time.Duration `koanf:"job_retention"`
	// ResultPartitions applies to a RESULTS stream created with it.
	ResultPartitions int `koanf:"result_partitions"`
}

// secret is a setting that must not reach a log: slog and fmt print it
// redacted; string(s) is the value.
type secret string

// String hides the value.
func (s secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue hides the value.
func (s secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// role is the subcommand that runs: each reads the settings it needs.
type role string

const (
	roleServe  role = "serve"
	roleAPI    role = "api"
	roleWorker role = "worker"
	roleAgent  role = "agent"
)

// setting is one row of the configuration: its key in the config file,
// its environment variable (if it has one), its default and its meaning.
// Flags name settings per role (roleFlags).
type setting struct {
	key, env string
	def      any
	help     string
}

// settings lists every setting. A default's type is the flag's type.
// Environment variable names are those fleetjob has always read.
var settings = []setting{
	{"log_level", "FLEETJOB_LOG_LEVEL", "info", "log level: debug, info, warn, error"},
	{"data_dir", "FLEETJOB_DATA_DIR", "./data", "JetStream store, the built-in agent's journal (agent/) and the admin token"},
	{"http.addr", "FLEETJOB_HTTP_ADDR", "127.0.0.1:8080", "HTTP listen address of the API (it serves /metrics too)"},
	{"http.tls_cert", "FLEETJOB_HTTP_TLS_CERT", "", "the API's TLS certificate (PEM): the API then serves HTTPS only"},
	{"http.tls_key", "FLEETJOB_HTTP_TLS_KEY", "", "the key of http.tls_cert (PEM)"},
	{"nats.url", "NATS_URL", "nats://127.0.0.1:4222", "NATS to join, comma-separated URLs for a cluster"},
	{"nats.addr", "FLEETJOB_NATS_ADDR", "127.0.0.1:4233", "embedded NATS listen address; remote agents and workers join here"},
	{"nats.creds", "FLEETJOB_NATS_CREDS", "", "NATS credentials file (JWT and nkey seed) of this process's identity: `fleetjob nats-auth init` writes the services', enrolment an agent's"},
	{"nats.tls_cert", "FLEETJOB_NATS_TLS_CERT", "", "serve: the embedded NATS server's TLS certificate (PEM), which turns TLS on; other roles: the client certificate they present (mTLS)"},
	{"nats.auth_dir", "FLEETJOB_NATS_AUTH_DIR", "", "api: the NATS authority's directory (fleetjob nats-auth init --dir): with it the API issues enrolling agents their NATS credentials and revokes them; without it agents get theirs from fleetjob nats-auth agent"},
	{"nats.tls_key", "FLEETJOB_NATS_TLS_KEY", "", "the key of nats.tls_cert (PEM)"},
	{"nats.tls_ca", "FLEETJOB_NATS_TLS_CA", "", "serve: the CA whose client certificates the embedded server requires (mTLS); other roles: the CA they trust the servers' certificates by"},
	{"nats.sync", "", time.Duration(0), "JetStream fsync interval (0: the server's default, 2m)"},
	{"nats.sync_always", "", false, "fsync JetStream on every write (safest, slowest)"},
	{"redis.url", "REDIS_URL", "", "Redis cache, redis://[user:pass@]host:port/db (empty in serve: an in-process Redis)"},
	{"redis.keep_finished", "FLEETJOB_CACHE_KEEP_FINISHED", 0, "finished jobs the status cache keeps, newest first (0: 10,000 with the in-process Redis, 1,000,000 with redis.url); older ones are read from JetStream and leave the listings"},
	{"redis.keep_for", "FLEETJOB_CACHE_KEEP_FOR", time.Duration(0), "how long the status cache keeps a finished job after its last change (0: 24h in process, 720h with redis.url)"},
	{"api.token", "FLEETJOB_TOKEN", "", "admin bearer token of /v1 (serve generates one into the data dir when empty)"},
	{"api.octans_allow", "FLEETJOB_OCTANS_ALLOW", "", "comma-separated source networks whose octans clients may call without a token, each as an operator of the scopes after '=' (10.1.0.0/16=biz:2+biz:3); nothing is open by default"},
	{"api.rate", "FLEETJOB_API_RATE", 100, "requests per second each credential may make (0: no limit); the admin token is exempt"},
	{"api.burst", "FLEETJOB_API_BURST", 200, "requests a credential may make at once above its rate"},
	{"api.risk_rules", "FLEETJOB_RISK_RULES", "", "JSON file of high-risk command rules that replaces the shipped ones"},
	{"workers.count", "", 1, "workers in this process"},
	{"workers.spec_cache", "FLEETJOB_SPEC_CACHE", orchestrator.DefaultSpecs, "job specs a worker process keeps in memory, least recently used out first; a job whose spec is not kept reads it again from JetStream (its submit command)"},
	{"workers.create_window", "FLEETJOB_CREATE_WINDOW", orchestrator.DefaultCreateWindow, "how long a small job's first commit (its state and creation events) waits for its first results, its tasks already out, so a job that ends within it is stored by one commit (0: written at once)"},
	{"metrics.addr", "", "", "serve /metrics here (off when empty)"},
	{"debug.release_memory", "FLEETJOB_RELEASE_MEMORY", 10 * time.Second, "how often the process looks whether a burst is over (no garbage collection since its last look, its heap grown by 32 MiB since it last gave memory back) and then collects and gives the free heap back to the OS at once, again after 1, 2, 4, … up to 32 more quiet looks; an idle process (collections at GOGC 25 2 s or more apart) collects at GOGC 25 until work is back (0: left to Go's scavenger, which may take minutes)"},
	{"debug.pprof_addr", "FLEETJOB_PPROF_ADDR", "", "serve Go's profiles (/debug/pprof/) on this loopback address, for whoever runs the process (off when empty; only 127.0.0.1 or [::1])"},
	{"agent.disabled", "", false, "do not run an agent for this machine"},
	{"agent.id", "", "", "agent id (default: hostname-ip)"},
	{"agent.ip", "", "", "IP address of the host this agent serves"},
	{"agent.cloud_id", "", int64(0), "cloud area id of the host"},
	{"agent.host_id", "", int64(0), "the host's numeric id in your CMDB (BlueKing bk_host_id), if any"},
	{"agent.labels", "", []string{}, "label k=v (repeatable)"},
	{"agent.slots", "", 64, "tasks run at once"},
	{"agent.shutdown_grace", "", 10 * time.Second, "time running scripts get to finish on shutdown"},
	{"agent.data_dir", "FLEETJOB_AGENT_DIR", "./data/agent", "the agent's journal and script directory"},
	{"simulate.agents", "", 0, "LOAD TOOL: serve this many simulated agents that finish every task at once, instead of a real agent"},
	{"simulate.pool", "", "sim", "with --simulate: the task pool and id prefix of the simulated agents"},
	{"simulate.first_ip", "", "10.200.0.1", "with --simulate: the IP of the first simulated agent; the others follow"},
	{"outbound.allow", "FLEETJOB_OUTBOUND_ALLOW", "", "comma-separated internal prefixes (10.1.0.0/16, 127.0.0.1/32) that callbacks may go to; every other loopback, link-local, private or reserved address is refused"},
	{"enrol.url", "FLEETJOB_ENROL_URL", "", "enrol this agent at this API URL first (http(s)://host:port), with an enrolment token"},
	{"enrol.token", "FLEETJOB_ENROL_TOKEN", "", "the one-use enrolment token an admin made (fleetjob enrolment create)"},
	{"enrol.only", "", false, "enrol, store the credentials and exit"},
	{"client.api_url", "FLEETJOB_API", "http://127.0.0.1:8080", "the API the token, bk-app, account and enrolment commands call (with the admin token)"},
	{"topology.replicas", "FLEETJOB_REPLICAS", schemas.DefaultTopology().Replicas, "stream and bucket replicas (3 in a cluster); every process must agree"},
	{"topology.ack_wait", "FLEETJOB_ACK_WAIT", schemas.DefaultTopology().AckWait, "redelivery wait of the workers' consumers; every process must agree"},
	{"topology.task_ack_wait", "FLEETJOB_TASK_ACK_WAIT", schemas.DefaultTopology().TaskWait, "redelivery wait of the agents' task consumers; every process must agree"},
	{"topology.job_retention", "FLEETJOB_JOB_RETENTION", schemas.DefaultTopology().JobRetention, "how long JetStream keeps a job (its submit command, state and results); a job not ended an hour before is failed. Applies to the JOBS stream and jobs bucket when they are created"},
	{"topology.result_partitions", "FLEETJOB_RESULT_PARTITIONS", schemas.DefaultTopology().ResultPartitions, "partitions of the RESULTS stream by job, each consumed by one worker at a time (0: one consumer shared by all); applies when the stream is created"},
}

// configEnv names the config file when --config is not given.
const configEnv = "FLEETJOB_CONFIG"

// flagKey binds a flag to a setting.
type flagKey struct{ flag, key string }

// rootFlags are every role's.
var rootFlags = []flagKey{{"log-level", "log_level"}}

// roleFlags are each role's own flags. serve names its built-in agent's
// settings --agent-…; the agent role's --data-dir is its journal.
var roleFlags = map[role][]flagKey{
	roleServe: {
		{"http-addr", "http.addr"}, {"nats-addr", "nats.addr"}, {"data-dir", "data_dir"},
		{"http-tls-cert", "http.tls_cert"}, {"http-tls-key", "http.tls_key"},
		{"workers", "workers.count"}, {"nats-sync", "nats.sync"}, {"nats-sync-always", "nats.sync_always"},
		{"no-agent", "agent.disabled"}, {"agent-id", "agent.id"}, {"agent-ip", "agent.ip"},
		{"agent-cloud-id", "agent.cloud_id"}, {"agent-host-id", "agent.host_id"}, {"agent-label", "agent.labels"},
		{"agent-slots", "agent.slots"}, {"agent-shutdown-grace", "agent.shutdown_grace"},
		{"outbound-allow", "outbound.allow"},
		{"octans-allow", "api.octans_allow"}, {"api-rate", "api.rate"}, {"api-burst", "api.burst"},
		{"nats-tls-cert", "nats.tls_cert"}, {"nats-tls-key", "nats.tls_key"}, {"nats-tls-ca", "nats.tls_ca"},
		{"cache-keep-finished", "redis.keep_finished"}, {"cache-keep-for", "redis.keep_for"},
	},
	roleAPI: {{"http-addr", "http.addr"}, {"nats-auth-dir", "nats.auth_dir"}, {"http-tls-cert", "http.tls_cert"}, {"http-tls-key", "http.tls_key"}, {"octans-allow", "api.octans_allow"}, {"api-rate", "api.rate"}, {"api-burst", "api.burst"},
		{"nats-creds", "nats.creds"}, {"nats-tls-cert", "nats.tls_cert"}, {"nats-tls-key", "nats.tls_key"}, {"nats-tls-ca", "nats.tls_ca"}},
	roleWorker: {{"workers", "workers.count"}, {"metrics-addr", "metrics.addr"}, {"outbound-allow", "outbound.allow"}, {"nats-creds", "nats.creds"},
		{"cache-keep-finished", "redis.keep_finished"}, {"cache-keep-for", "redis.keep_for"},
		{"nats-tls-cert", "nats.tls_cert"}, {"nats-tls-key", "nats.tls_key"}, {"nats-tls-ca", "nats.tls_ca"}},
	roleClient: {{"api", "client.api_url"}, {"data-dir", "data_dir"}},
	roleAgent: {
		{"nats-creds", "nats.creds"},
		{"nats-tls-cert", "nats.tls_cert"}, {"nats-tls-key", "nats.tls_key"}, {"nats-tls-ca", "nats.tls_ca"},
		{"id", "agent.id"}, {"ip", "agent.ip"}, {"cloud-id", "agent.cloud_id"}, {"host-id", "agent.host_id"},
		{"label", "agent.labels"}, {"slots", "agent.slots"}, {"shutdown-grace", "agent.shutdown_grace"},
		{"data-dir", "agent.data_dir"}, {"metrics-addr", "metrics.addr"},
		{"simulate", "simulate.agents"}, {"sim-pool", "simulate.pool"}, {"sim-first-ip", "simulate.first_ip"},
		{"enrol", "enrol.url"}, {"token", "enrol.token"}, {"enrol-only", "enrol.only"},
	},
}

// flagsOf lists every flag r reads.
func flagsOf(r role) []flagKey { return slices.Concat(rootFlags, roleFlags[r]) }

// settingOf finds the row of key.
func settingOf(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// defaults are the settings of r before any file, environment or flag.
func defaults(r role) map[string]any {
	m := make(map[string]any, len(settings))
	for _, s := range settings {
		m[s.key] = s.def
	}
	switch r {
	case roleServe:
		m["workers.count"] = 2
		m["agent.ip"] = "127.0.0.1"
	case roleAgent:
		m["agent.ip"] = primaryIP()
	}
	return m
}

// bindFlags defines binds on fs, each with its setting's default for r
// and its help.
func bindFlags(fs *pflag.FlagSet, r role, binds []flagKey) {
	def := defaults(r)
	for _, b := range binds {
		s, ok := settingOf(b.key)
		if !ok {
			panic("flag --" + b.flag + " names no setting " + b.key)
		}
		help := s.help
		if s.env != "" {
			help += " (env " + s.env + ")"
		}
		switch v := def[b.key].(type) {
		case string:
			fs.String(b.flag, v, help)
		case int:
			fs.Int(b.flag, v, help)
		case int64:
			fs.Int64(b.flag, v, help)
		case bool:
			fs.Bool(b.flag, v, help)
		case time.Duration:
			fs.Duration(b.flag, v, help)
		case []string:
			fs.StringArray(b.flag, v, help)
		default:
			panic(fmt.Sprintf("setting %s: no flag type for %T", b.key, v))
		}
	}
}

// loadConfig reads r's settings once: the defaults, then the YAML file
// named by --config (or FLEETJOB_CONFIG), then the environment, then the
// flags given on the command line; each source overrides the ones
// before it. An environment variable set to the empty string counts as
// unset, as it always has. The result is validated for r.
func loadConfig(r role, fs *pflag.FlagSet, environ []string) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults(r), "."), nil); err != nil {
		return Config{}, fmt.Errorf("defaults: %w", err)
	}
	envKeys := map[string]string{}
	for _, s := range settings {
		if s.env != "" {
			envKeys[s.env] = s.key
		}
	}
	if lookupEnv(environ, "FLEETJOB_COMPAT_TOKEN") != "" {
		return Config{}, fmt.Errorf("FLEETJOB_COMPAT_TOKEN was removed: octans clients send a bearer token (fleetjob token create) or call from a network listed in --octans-allow")
	}
	path, _ := fs.GetString("config")
	if path == "" {
		path = lookupEnv(environ, configEnv)
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	err := k.Load(env.Provider(".", env.Opt{
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) {
			if v == "" {
				return "", nil
			}
			return envKeys[name], v
		},
	}), nil)
	if err != nil {
		return Config{}, fmt.Errorf("environment: %w", err)
	}
	flagKeys := map[string]string{}
	for _, b := range flagsOf(r) {
		flagKeys[b.flag] = b.key
	}
	err = k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	}), nil)
	if err != nil {
		return Config{}, fmt.Errorf("flags: %w", err)
	}
	var c Config
	err = k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToTimeDurationHookFunc(),
		WeaklyTypedInput: true,
		ErrorUnused:      true, // a misspelt key in the file
		ErrorUnset:       true, // a field without a row in settings
	}})
	if err != nil {
		return Config{}, decodeError(r, err)
	}
	return c, c.validate(r)
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// topology is the streams' and buckets' settings: the shipped ones with
// the configured tunables.
func (c *Config) topology() schemas.Topology {
	t := schemas.DefaultTopology()
	t.Replicas = c.Topology.Replicas
	t.AckWait = c.Topology.AckWait
	t.TaskWait = c.Topology.TaskAckWait
	t.JobRetention = c.Topology.JobRetention
	t.ResultPartitions = c.Topology.ResultPartitions
	return t
}

// cacheRetention is the status cache's bound on finished jobs: the
// default of the Redis in use (the in-process one lives in this heap),
// with what the settings override.
func (c Config) cacheRetention() statuscache.Retention {
	r := statuscache.DefaultRetention(c.Redis.URL == "")
	if c.Redis.KeepFinished > 0 {
		r.MaxFinished = c.Redis.KeepFinished
	}
	if c.Redis.KeepFor > 0 {
		r.MaxAge = c.Redis.KeepFor
	}
	return r
}

// createWindow is workers.create_window as the roles take it: 0 there is
// the default, so a window of 0 here (written at once) is negative there.
func (c Config) createWindow() time.Duration {
	if c.Workers.CreateWindow <= 0 {
		return -1
	}
	return c.Workers.CreateWindow
}
