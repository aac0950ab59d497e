package statuscache

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestRowsRoundTrip(t *testing.T) {
	since := time.Date(2026, 12, 2, 15, 34, 51, 793856636, time.UTC)
	code := 3
	rows := []schemas.HostRow{
		{HostResult: schemas.HostResult{Step: 0, Index: 0, Host: schemas.Host{IP: "10.250.0.1"}, Status: schemas.HostWaitingAgent}, Since: since},
		{HostResult: schemas.HostResult{Step: 2, Index: 17, Host: schemas.Host{CloudID: 7, IP: "fe80::1"}, Status: schemas.HostFailed,
			AgentID: "a-1", ExitCode: &code, Attempt: 2, Lines: 40, StartedAt: since, EndedAt: since.Add(time.Second), Error: `exit | "3"`}, Since: since},
		{HostResult: schemas.HostResult{Step: 1, Phase: schemas.PhaseUpload, Index: 4, Host: schemas.Host{IP: "10.0.0.9"}, Status: schemas.HostPending}},
	}
	for _, r := range rows {
		field := hostField(r.Step, r.Phase, r.Index)
		got, ok := decodeRow(field, "12|"+string(encodeRow(r)))
		if !ok || !reflect.DeepEqual(got, r) {
			t.Errorf("%s: read back %+v (%v), want %+v", field, got, ok, r)
		}
	}
	// what older fleetjob wrote: the row in JSON
	old, _ := json.Marshal(rows[1])
	if got, ok := decodeRow("2.17", "9|"+string(old)); !ok || !reflect.DeepEqual(got, rows[1]) {
		t.Errorf("JSON row read back %+v (%v)", got, ok)
	}
	for _, bad := range []string{"", "1", "1|x|1|0|0|:1.2.3.4|", "1|1||0|0|1.2.3.4|", "1|1||0|0|:1.2.3.4|{"} {
		if _, ok := decodeRow("0.0", bad); ok {
			t.Errorf("%q read as a row", bad)
		}
	}
}

// A waiting row at a revision of ten million stays within Redis's
// listpack bound, so a queued job's hosts hash is a listpack.
func TestWaitingRowFitsListpack(t *testing.T) {
	r := schemas.HostRow{HostResult: schemas.HostResult{Host: schemas.Host{IP: "255.255.255.255"}, Status: schemas.HostWaitingAgent},
		Since: time.Date(2026, 12, 2, 15, 34, 51, 793856636, time.UTC)}
	if v := strconv.Itoa(10_000_000) + "|" + string(encodeRow(r)); len(v) > 64 {
		t.Errorf("%q is %d bytes: over hash-max-listpack-value", v, len(v))
	}
}
