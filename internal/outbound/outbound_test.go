package outbound

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counting is a server that counts the requests that reached it.
func counting(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func get(t *testing.T, g *Guard, url string) error {
	t.Helper()
	c := g.Client(5 * time.Second)
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err == nil {
		resp.Body.Close()
	}
	return Describe(err)
}

func TestRefusesInternalAddressesAtDialTime(t *testing.T) {
	srv, hits := counting(t, nil)
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	for _, url := range []string{
		srv.URL,                   // 127.0.0.1 literally
		"http://localhost" + port, // a name that resolves to loopback
		"http://[::1]" + port,     // IPv6 loopback
		"http://169.254.169.254/latest/meta-data", // cloud metadata: refused before any packet is sent
		"http://0.0.0.0" + port,                   // unspecified
		"http://10.1.2.3:80/",                     // private
	} {
		err := get(t, New(), url)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("%s: got %v, want a refusal", url, err)
		}
		if strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "dial tcp") {
			t.Errorf("%s: %q tells the transport's words", url, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests reached the loopback server", n)
	}
	// allowed by an admin's prefix, the same server answers
	if err := get(t, New(netip.MustParsePrefix("127.0.0.1/32")), srv.URL); err != nil || hits.Load() != 1 {
		t.Errorf("allow-listed: %v, %d hits", err, hits.Load())
	}
}

func TestRedirectToAnInternalAddressIsRefused(t *testing.T) {
	// the receiver the URL names is allowed (127.0.0.1); it redirects to
	// 127.0.0.2, which is not
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 to listen on: %v", err)
	}
	var inner atomic.Int32
	internal := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { inner.Add(1) }))
	internal.Listener.Close()
	internal.Listener = ln
	internal.Start()
	defer internal.Close()
	outer, _ := counting(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/secret", http.StatusFound)
	})
	err = get(t, New(netip.MustParsePrefix("127.0.0.1/32")), outer.URL)
	if !errors.Is(err, ErrRefused) {
		t.Errorf("redirect to 127.0.0.2: got %v, want a refusal", err)
	}
	if inner.Load() != 0 {
		t.Error("the redirect reached the internal server")
	}
	// endless redirects end
	var loop *httptest.Server
	loop, _ = counting(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, loop.URL, http.StatusFound) })
	if err := get(t, New(netip.MustParsePrefix("127.0.0.1/32")), loop.URL); !errors.Is(err, ErrRefused) {
		t.Errorf("redirect loop: %v", err)
	}
}

func TestFailuresDoNotTellAClosedPortFromAnOpenOne(t *testing.T) {
	g := New(netip.MustParsePrefix("127.0.0.1/32"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	// an open port that never answers HTTP
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			c.Close() // reset: not HTTP
		}
	}()
	e1, e2 := get(t, g, closed), get(t, g, "http://"+silent.Addr().String())
	if !errors.Is(e1, ErrUnreachable) || !errors.Is(e2, ErrUnreachable) || e1.Error() != e2.Error() {
		t.Errorf("closed port %q, open port %q: want the same unreachable", e1, e2)
	}
}

func TestCheckURL(t *testing.T) {
	g := New()
	for url, ok := range map[string]bool{
		"https://example.com/cb": true, "http://93.184.216.34/cb": true,
		"ftp://example.com/": false, "file:///etc/passwd": false, "http:///x": false,
		"http://127.0.0.1/": false, "http://[fe80::1]/": false, "http://[::ffff:127.0.0.1]/": false,
	} {
		if err := g.CheckURL(url); (err == nil) != ok {
			t.Errorf("%s: got %v, want allowed %v", url, err, ok)
		}
	}
}
