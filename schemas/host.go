package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Host is a target machine: an IP inside a cloud area. Plain IPs mean cloud 0.
type Host struct {
	CloudID int64  `json:"cloud_id"`
	IP      string `json:"ip"`
}

// String renders the host as "cloud:ip", the form used in keys and logs.
func (h Host) String() string { return strconv.FormatInt(h.CloudID, 10) + ":" + h.IP }

// UnmarshalJSON accepts either a plain IP string or {"cloud_id", "ip"}.
// Its errors say what a host looks like in the client's terms.
func (h *Host) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var ip string
		if err := json.Unmarshal(b, &ip); err != nil {
			return err
		}
		*h = Host{IP: ip}
		return nil
	}
	out, ok := canonicalHost(b)
	if !ok {
		var err error
		if out, err = decodeHostObject(b); err != nil {
			return err
		}
	}
	*h = out
	return nil
}

// decodeHostObject reads {"cloud_id", "ip"} in any spelling encoding/json
// accepts, with errors in the client's terms.
func decodeHostObject(b []byte) (Host, error) {
	var fields map[string]json.RawMessage
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &fields) != nil {
		return Host{}, hostError(b, `a host is an IP address string or {"cloud_id": number, "ip": string}, not %s`, abbrev(b))
	}
	var out Host
	for _, k := range slices.Sorted(maps.Keys(fields)) { // the same error for the same body
		var dst any
		var want string
		switch strings.ToLower(k) { // encoding/json matches names case-insensitively too
		case "cloud_id":
			dst, want = &out.CloudID, "a whole number"
		case "ip":
			dst, want = &out.IP, "a string"
		default:
			return Host{}, hostError(b, `a host has only "cloud_id" and "ip", not %q`, k)
		}
		if json.Unmarshal(fields[k], dst) != nil {
			return Host{}, hostError(b, "a host's %s is %s, not %s", strings.ToLower(k), want, abbrev(fields[k]))
		}
	}
	return out, nil
}

// canonicalHost reads the form Host marshals to, {"cloud_id":N,"ip":"..."}
// with the IP plain printable ASCII: what fleetjob's own messages carry,
// thousands to a job, read without the general path's map and sort.
func canonicalHost(b []byte) (Host, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"cloud_id":`))
	if !ok {
		return Host{}, false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 || (rest[0] == '0' && i > 1) {
		return Host{}, false
	}
	cloud, err := strconv.ParseInt(string(rest[:i]), 10, 64)
	if err != nil {
		return Host{}, false
	}
	ip, ok := bytes.CutPrefix(rest[i:], []byte(`,"ip":"`))
	if !ok {
		return Host{}, false
	}
	ip, ok = bytes.CutSuffix(ip, []byte(`"}`))
	if !ok {
		return Host{}, false
	}
	for _, c := range ip { // plain printable ASCII only: escapes, quotes and
		// bytes that are not UTF-8 (which encoding/json replaces) take the general path
		if c < 0x20 || c > 0x7e || c == '\\' || c == '"' {
			return Host{}, false
		}
	}
	return Host{CloudID: cloud, IP: string(ip)}, true
}

func hostError(raw []byte, format string, args ...any) error {
	return &ValueError{Raw: raw, Type: reflect.TypeFor[Host](), Reason: fmt.Sprintf(format, args...)}
}

// abbrev quotes at most 40 bytes of a JSON value for an error.
func abbrev(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// validate reports a bad host at the JSON path p.
func (h *Host) validate(p string, fe *FieldErrors) {
	if h.CloudID < 0 {
		fe.Add(p+".cloud_id", "must not be negative, got %d", h.CloudID)
		return
	}
	if err := h.Validate(); err != nil {
		fe.Add(p, "%v", err)
	}
}

// Validate checks the IP and cloud id and canonicalises the IP.
func (h *Host) Validate() error {
	if h.CloudID < 0 {
		return fmt.Errorf("cloud_id %d is negative", h.CloudID)
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(h.IP))
	if err != nil {
		return fmt.Errorf("%q is not an IP address", h.IP)
	}
	if addr.Zone() != "" {
		// a zone names an interface of the sender, not a host of the fleet
		return fmt.Errorf("%q has an IPv6 zone: give the address alone", h.IP)
	}
	h.IP = addr.Unmap().String()
	return nil
}

// ParseHost reads "ip" or "cloud:ip"; an IPv6 address may be bracketed,
// "[ip]" or "cloud:[ip]", which is the only way to give it a cloud
// ("0:fe80::1" is itself an IPv6 address).
func ParseHost(s string) (Host, error) {
	h := Host{IP: s}
	if i := strings.LastIndex(s, ":"); i > 0 && !strings.Contains(s[:i], ":") {
		cloud, err := strconv.ParseInt(s[:i], 10, 64)
		if err == nil {
			h = Host{CloudID: cloud, IP: s[i+1:]}
		}
	} else if c, ip, ok := strings.Cut(s, "["); ok && strings.HasSuffix(ip, "]") && (c == "" || strings.HasSuffix(c, ":")) {
		h = Host{IP: strings.TrimSuffix(ip, "]")}
		if c != "" {
			cloud, err := strconv.ParseInt(strings.TrimSuffix(c, ":"), 10, 64)
			if err != nil {
				return Host{}, fmt.Errorf("host %q: %w", s, ErrInvalid)
			}
			h.CloudID = cloud
		}
	}
	if err := h.Validate(); err != nil {
		return Host{}, fmt.Errorf("host %q: %w", s, ErrInvalid)
	}
	return h, nil
}
