package api

import (
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// enrolSeeds are the documented request bodies of the enrolment routes.
var enrolSeeds = []string{
	`{"scope":"biz:2","hosts":["10.0.0.5",{"cloud_id":3,"ip":"10.0.0.6"}],"labels":{"rack":"r1"},"ttl":"1h"}`,
	`{"agent":"web-1","hosts":["10.0.0.5"]}`,
	`{"agent":"sim","simulator":true,"ranges":[{"cloud_id":0,"first":"10.200.0.1","last":"10.200.39.16"}],"ttl":"10m"}`,
	`{"agent":"web-1","hostname":"web-1.example","nkey":"UAXYZ","xkey":"XAXYZ","slots":32}`,
}

// A grant is what its request says, canonical, and nothing else.
func TestEnrolmentGrant(t *testing.T) {
	now := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	var req TokenRequest
	if err := DecodeStrictBytes([]byte(enrolSeeds[0]), &req); err != nil {
		t.Fatal(err)
	}
	g, err := req.grant(now)
	if err != nil {
		t.Fatal(err)
	}
	if g.Scope.String() != "biz:2" || len(g.Hosts) != 2 || g.Hosts[1] != (schemas.Host{CloudID: 3, IP: "10.0.0.6"}) ||
		!g.Expires.Equal(now.Add(time.Hour)) || g.Labels["rack"] != "r1" {
		t.Fatalf("grant %+v", g)
	}
	for _, bad := range []TokenRequest{
		{}, {Hosts: []schemas.Host{{IP: "10.0.0.5"}}, TTL: "8d"}, {Hosts: []schemas.Host{{IP: "10.0.0.5"}}, Scope: "biz"},
		{Simulator: true, Hosts: []schemas.Host{{IP: "10.0.0.5"}}},
		{Ranges: []schemas.HostRange{{First: "10.0.0.9", Last: "10.0.0.1"}}, Simulator: true},
	} {
		if _, err := bad.grant(now); err == nil {
			t.Errorf("grant of %+v accepted", bad)
		}
	}
}

// FuzzEnrolmentRequests feeds the enrolment routes' decoders and the
// grant check arbitrary bodies: errors, never a panic, and every grant
// accepted is bounded.
func FuzzEnrolmentRequests(f *testing.F) {
	for _, s := range enrolSeeds {
		f.Add([]byte(s))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, body []byte) {
		var er EnrolRequest
		_ = DecodeStrictBytes(body, &er)
		var req TokenRequest
		if DecodeStrictBytes(body, &req) != nil {
			return
		}
		g, err := req.grant(now)
		if err != nil {
			return
		}
		if len(g.Hosts)+len(g.Ranges) == 0 || g.Expires.After(now.Add(MaxEnrolTTL)) || !g.Expires.After(now) {
			t.Fatalf("unbounded grant %+v from %q", g, body)
		}
	})
}
