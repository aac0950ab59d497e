package natsauth

// This file holds what each identity may publish and subscribe to. The
// subjects of fleetjob's own messages come from package schemas; the
// $JS.… ones are JetStream's API.

import (
	"fmt"

	"github.com/nats-io/jwt/v2"

	"github.com/fleetjob/fleetjob/schemas"
)

// AgentInboxPrefix is the inbox prefix of an agent's connection: replies
// to its requests (pulls, publish acks, direct gets) come here, and its
// permissions let it subscribe to no other inbox.
func AgentInboxPrefix(agentID string) string { return "_INBOX_AGENT." + agentID }

// simulatorInboxPrefix is a simulator's inbox prefix.
func simulatorInboxPrefix(pool string) string { return "_INBOX_SIM." + pool }

// AgentPermissions are what agent id may do: pull from its own task
// consumer and ack it; answer on its own control subject; publish
// reports and log chunks only on subjects carrying its id; heartbeat only
// its own registry key; read back only its own log subjects, by direct
// get by subject; ask the artifact relay on its own transfer subjects;
// its own inbox. It creates no stream or consumer, reads no KV bucket and
// has no access to the artifacts object store: the store's chunk subjects
// ($O.artifacts.C.<nuid>) name no job or agent, and a pattern over them
// would also admit a literal ">" token (a consumer over every chunk), so
// files come and go through the relay, which checks each request against
// the job (package artifactrelay).
func AgentPermissions(id string) (jwt.Permissions, error) {
	if !schemas.ValidAgentID(id) {
		return jwt.Permissions{}, fmt.Errorf("agent id %q: %w", id, schemas.ErrInvalid)
	}
	consumer := schemas.AgentConsumer(id)
	pool := schemas.DefaultPool
	var p jwt.Permissions
	p.Pub.Allow.Add(
		"$JS.API.CONSUMER.MSG.NEXT."+schemas.StreamTasks+"."+consumer,
		"$JS.API.CONSUMER.INFO."+schemas.StreamTasks+"."+consumer,
		"$JS.ACK."+schemas.StreamTasks+"."+consumer+".>",
		schemas.AgentResultSubjects(pool, id),
		schemas.AgentLogSubjects(pool, id),
		"$JS.API.DIRECT.GET."+schemas.StreamLogs+"."+schemas.AgentLogSubjects(pool, id),
		schemas.KVSubject(schemas.BucketAgents, id),
	)
	// transfers: the relay reads the asker from the subject
	p.Pub.Allow.Add(schemas.AgentXferSubjects(pool, id)...)
	p.Sub.Allow.Add(
		schemas.ControlSubject(pool, id),
		AgentInboxPrefix(id)+".>",
	)
	// answers to kill requests go to the requester's inbox
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	return p, nil
}

// simulatorPermissions are an agent's for every identity of one pool: a
// load simulator acts for all of them. Registry keys of simulated agents
// ("<pool>-<i>") cannot be told apart by a subject pattern, so it may
// heartbeat any registry key: simulator credentials are a service's.
func simulatorPermissions(pool string) jwt.Permissions {
	consumer := "pool-" + pool
	var p jwt.Permissions
	p.Pub.Allow.Add(
		"$JS.API.CONSUMER.CREATE."+schemas.StreamTasks+"."+consumer+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+schemas.StreamTasks+"."+consumer,
		"$JS.API.CONSUMER.INFO."+schemas.StreamTasks+"."+consumer,
		"$JS.ACK."+schemas.StreamTasks+"."+consumer+".>",
		schemas.AgentResultSubjects(pool, "*"),
		schemas.AgentLogSubjects(pool, "*"),
		schemas.KVSubject(schemas.BucketAgents, ">"),
	)
	p.Sub.Allow.Add(schemas.PoolControlSubject(pool), simulatorInboxPrefix(pool)+".>")
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	return p
}

// SimulatorInboxPrefix is the inbox prefix a simulator of pool connects with.
func SimulatorInboxPrefix(pool string) string { return simulatorInboxPrefix(pool) }

// servicePermissions are the API's, the workers' and the admin's. Neither
// the API nor a worker is an agent: neither may publish an agent's report
// or log, and only the admin changes streams.
func servicePermissions(role Role) jwt.Permissions {
	var p jwt.Permissions
	topology := []string{
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
	}
	agentWrites := []string{
		schemas.AgentResultSubjects("*", "*"),
		schemas.AgentLogSubjects("*", "*"),
	}
	switch role {
	case RoleAdmin:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
	case RoleAPI:
		// commands; JetStream reads, consumers (KV watches, event
		// streams, agents' task consumers), KV writes (names, enrolments)
		// and the audit events of every write it accepts
		p.Pub.Allow.Add(schemas.SubjCommands, schemas.SubjEventPrefix+"audit.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>")
		p.Pub.Deny.Add(topology...)
		p.Pub.Deny.Add(agentWrites...)
		p.Sub.Allow.Add("_INBOX.>", schemas.SubjEventPrefix+">")
	case RoleWorker:
		// consume commands and reports, write state, publish tasks,
		// events, kicks and kill requests
		p.Pub.Allow.Add(
			schemas.SubjTasks, schemas.SubjSweeperResults, schemas.SubjPartitionedSweeperResults, schemas.SubjEventPrefix+">", schemas.SubjControls,
			"$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>",
		)
		p.Pub.Deny.Add(topology...)
		p.Pub.Deny.Add(agentWrites...)
		p.Sub.Allow.Add("_INBOX.>", schemas.SubjEventPrefix+">")
		// the artifact relay: agents' transfer requests and upload
		// sessions' chunks (every worker process serves them in one queue
		// group) ...
		p.Sub.Allow.Add(schemas.SubjXferAll)
		// held first commits: a worker forwards the reports of a job
		// whose first commit another worker process holds to that
		// process (schemas.HeldSubject); workers only
		p.Pub.Allow.Add(schemas.SubjHeldAll)
		p.Sub.Allow.Add(schemas.SubjHeldAll)
		// ... answered on each asker's inbox, once per request: no
		// standing right to publish into agents' inboxes
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	return p
}
