// Package outbound guards every request fleetjob makes to a URL a client
// gave it (job callbacks now; webhooks and package URLs later): the
// address is checked when it is dialled, after DNS resolution and on every
// redirect, so a name that resolves to an internal address, or a redirect
// to one, is refused like a literal one. Loopback, link-local (cloud
// metadata included), private, shared, multicast and unspecified addresses
// are refused unless an admin allows their prefix. Errors say what was
// refused, never whether a port answered.
package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrRefused marks a destination the guard does not allow.
var ErrRefused = errors.New("destination not allowed")

// ErrUnreachable is what a client learns of any other failure to connect
// or to get an answer: the same words for a closed port, a filtered one, a
// timeout or a reset.
var ErrUnreachable = errors.New("the URL could not be reached")

// MaxRedirects bounds the redirects one request follows.
const MaxRedirects = 3

// blocked are the ranges no request goes to unless allowed.
var blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),         // "this network", unspecified
	netip.MustParsePrefix("10.0.0.0/8"),        // private
	netip.MustParsePrefix("100.64.0.0/10"),     // shared (carrier-grade NAT)
	netip.MustParsePrefix("127.0.0.0/8"),       // loopback
	netip.MustParsePrefix("169.254.0.0/16"),    // link-local, cloud metadata (169.254.169.254)
	netip.MustParsePrefix("172.16.0.0/12"),     // private
	netip.MustParsePrefix("192.0.0.0/24"),      // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"),    // private
	netip.MustParsePrefix("198.18.0.0/15"),     // benchmarking
	netip.MustParsePrefix("224.0.0.0/4"),       // multicast
	netip.MustParsePrefix("240.0.0.0/4"),       // reserved, broadcast
	netip.MustParsePrefix("::/128"),            // unspecified
	netip.MustParsePrefix("::1/128"),           // loopback
	netip.MustParsePrefix("fc00::/7"),          // unique local
	netip.MustParsePrefix("fe80::/10"),         // link-local
	netip.MustParsePrefix("ff00::/8"),          // multicast
	netip.MustParsePrefix("fd00:ec2::254/128"), // AWS metadata over IPv6 (inside fc00::/7 too)
}

// Guard decides which addresses requests may go to.
type Guard struct {
	allow []netip.Prefix
}

// New returns a guard that also allows the given prefixes (an admin's
// allow-list, e.g. a callback receiver on the private network).
func New(allow ...netip.Prefix) *Guard { return &Guard{allow: allow} }

// Check says whether a request may go to addr.
func (g *Guard) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, p := range g.allow {
		if p.Contains(addr) {
			return nil
		}
	}
	for _, p := range blocked {
		if p.Contains(addr) {
			return fmt.Errorf("%s is a loopback, link-local, private or reserved address: %w", addr, ErrRefused)
		}
	}
	return nil
}

// CheckURL refuses URLs that are not http or https, or that name a host
// literally in a refused range. Names are checked again when dialled.
func (g *Guard) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an http or https URL: %w", ErrRefused)
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return g.Check(a)
	}
	return nil
}

// Client returns an HTTP client whose every connection, redirects
// included, goes only where the guard allows, with timeout per request.
// Its errors are ErrRefused or ErrUnreachable (see Describe).
func (g *Guard) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{
		Timeout: 5 * time.Second,
		// Control runs after resolution, on the address actually dialled.
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%s: %w", address, ErrRefused)
			}
			return g.Check(ap.Addr())
		},
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial on our behalf, past the guard
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > MaxRedirects {
				return fmt.Errorf("more than %d redirects: %w", MaxRedirects, ErrRefused)
			}
			return g.CheckURL(req.URL.String())
		},
	}
}

// Describe turns a request error into what may be told to whoever gave the
// URL: the guard's refusal as it is, anything else as ErrUnreachable (a
// connection refused and a timeout read the same).
func Describe(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrRefused) {
		var re *refusal
		if errors.As(err, &re) {
			return re
		}
		return refusalOf(err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return ErrUnreachable
}

// refusal keeps the guard's own words, without the transport's.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return ErrRefused }

func refusalOf(err error) error {
	// find the innermost error that still says ErrRefused: the guard's text
	for {
		next := errors.Unwrap(err)
		if next == nil || !errors.Is(next, ErrRefused) || next == ErrRefused {
			return &refusal{msg: err.Error()}
		}
		err = next
	}
}
