package statuscache

// This file is how a job's summary is stored: one string per job,
// "<rev>|<status set index>|<summary JSON>". It was a hash of three fields
// (rev, si, v); the summary is longer than Redis's listpack bound, so the
// hash was a hashtable at ~700 bytes where the string is ~560. A job an
// older fleetjob kept as a hash is rewritten as a string by its next
// write (putJob), and read as a miss until then (legacy): the reader
// rebuilds it from JetStream and writes it back.

import (
	"bytes"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// putJob replaces the summary and moves the job between index sets, but only
// when the revision is not older than the one already cached. The value
// remembers the status set the job is in, so a move touches two sets, not
// all of them (a job without it, from an older fleetjob, is cleaned from
// every set once).
var putJob = redis.NewScript(putJobLua)

const putJobLua = `
local cur = redis.pcall('GET', KEYS[1])
local rev, old, known = nil, nil, cur
if type(cur) == 'table' then
  local h = redis.call('HMGET', KEYS[1], 'rev', 'si')
  rev, old, known = h[1], h[2], h[1]
elseif cur then
  rev, old = string.match(cur, '^(%d+)|(%d+)|')
end
if rev and tonumber(rev) > tonumber(ARGV[1]) then return 0 end
local si = tonumber(ARGV[6])
if type(cur) == 'table' then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[6] .. '|' .. ARGV[2])
old = tonumber(old)
if not known then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[3])
elseif not old then
  for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
elseif old ~= si and old > 0 then
  redis.call('ZREM', KEYS[4 + old], ARGV[3])
end
if si > 0 then redis.call('ZADD', KEYS[4 + si], ARGV[3], ARGV[3]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
return 1
`

// errBadSummary is a stored value that is not "<rev>|<si>|<json>".
var errBadSummary = errors.New("status cache: malformed job summary")

// readSummary is the summary JSON of a GET of a job's key.
func readSummary(cmd *redis.StringCmd) ([]byte, error) {
	b, err := cmd.Bytes()
	if err != nil {
		return nil, err
	}
	for range 2 {
		i := bytes.IndexByte(b, '|')
		if i < 0 {
			return nil, errBadSummary
		}
		b = b[i+1:]
	}
	return b, nil
}

// legacy reports an error of reading a job an older fleetjob kept as a
// hash.
func legacy(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}
