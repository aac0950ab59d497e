package callback

import "net/http"

// SetTransport makes s send its requests through rt.
func SetTransport(s *Sender, rt http.RoundTripper) { s.client.Transport = rt }
