package logindex

import (
	"testing"

	"go.uber.org/goleak"
)

// TestReadWithoutRedis points a client at a port nothing listens on; after
// a failed dial go-redis retries in the background, sleeping a second
// between tries, and that goroutine ends (at most a second after Close)
// on its own: it is the library's, not a leak of ours.
var redisRedial = goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redisRedial) }
