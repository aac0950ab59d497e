package main

import (
	"strings"
	"testing"
)

// The admin token is shown by the start that generates it, and by no other.
func TestBannerShowsTheTokenOnce(t *testing.T) {
	const tok = "0123456789abcdef"
	for _, c := range []struct {
		name                  string
		generated, configured bool
		shows                 bool
	}{
		{"generated", true, false, true},
		{"read from the data dir", false, false, false},
		{"configured", false, true, false},
	} {
		b := banner("http://127.0.0.1:8080", "nats://127.0.0.1:4233", tok, c.generated, c.configured, "./data", "127.0.0.1", false)
		if strings.Contains(b, tok) != c.shows {
			t.Errorf("%s: token shown %v, want %v:\n%s", c.name, !c.shows, c.shows, b)
		}
		if !strings.Contains(b, "export TOKEN=") {
			t.Errorf("%s: no export line", c.name)
		}
	}
}
