package agent

import (
	"testing"

	"go.uber.org/goleak"
)

// objectPutLeak is a goroutine nats.go v1.55 leaks on its own: ObjectStore.Put
// starts resetPendingAcksOnReconnect on a private publisher and its deferred
// cleanup can nil the status channel before that goroutine reads it, so it
// blocks on a nil channel forever (jetstream/publish.go:566-570 against
// jetstream.go:1326-1329). Nothing of ours holds it; ignore only that frame.
var objectPutLeak = goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, objectPutLeak) }
