package api_test

import (
	"testing"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// TestParseNetworkGrant reads the --octans-allow forms and refuses the rest.
func TestParseNetworkGrant(t *testing.T) {
	for _, tc := range []struct {
		in, prefix string
		scopes     []string
		bad        bool
	}{
		{in: "10.1.0.0/16", prefix: "10.1.0.0/16"},
		{in: " 10.1.2.3/16 = biz:2+biz_set:9 ", prefix: "10.1.0.0/16", scopes: []string{"biz:2", "biz_set:9"}},
		{in: "192.168.5.7=biz:3", prefix: "192.168.5.7/32", scopes: []string{"biz:3"}},
		{in: "office", bad: true},
		{in: "10.0.0.0/8=team:1", bad: true},
		{in: "", bad: true},
	} {
		g, err := api.ParseNetworkGrant(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.in, g)
			}
			continue
		}
		if err != nil || g.Prefix.String() != tc.prefix || g.Role != api.RoleOperator || len(g.Scopes) != len(tc.scopes) {
			t.Errorf("%q: %+v %v", tc.in, g, err)
			continue
		}
		for i, s := range tc.scopes {
			if g.Scopes[i].String() != s {
				t.Errorf("%q: scope %d is %s, want %s", tc.in, i, g.Scopes[i], s)
			}
		}
	}
}

// TestPrincipalRules: roles are ordered, admins hold every scope, others
// only theirs, and nobody without a role may do anything.
func TestPrincipalRules(t *testing.T) {
	biz2, biz3 := schemas.Scope{Type: "biz", ID: "2"}, schemas.Scope{Type: "biz", ID: "3"}
	op := &api.Principal{Role: api.RoleOperator, Scopes: []schemas.Scope{biz2}}
	admin := &api.Principal{Role: api.RoleAdmin}
	none := &api.Principal{}
	switch {
	case !op.May(api.RoleViewer) || !op.May(api.RoleOperator) || op.May(api.RoleAdmin):
		t.Error("operator's role")
	case !op.Holds(&biz2) || op.Holds(&biz3) || op.Holds(nil):
		t.Error("operator's scopes")
	case !admin.Holds(&biz3) || !admin.Holds(nil) || !admin.May(api.RoleAdmin):
		t.Error("admin")
	case none.May(api.RoleViewer) || none.Holds(&biz2):
		t.Error("no role")
	}
}
