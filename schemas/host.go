package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
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
	type plain Host
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("host must be an IP string or {\"cloud_id\", \"ip\"}: %w", err)
	}
	*h = Host(p)
	return nil
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
	h.IP = addr.Unmap().String()
	return nil
}

// ParseHost reads "ip" or "cloud:ip".
func ParseHost(s string) (Host, error) {
	h := Host{IP: s}
	if i := strings.LastIndex(s, ":"); i > 0 && !strings.Contains(s[:i], ":") {
		cloud, err := strconv.ParseInt(s[:i], 10, 64)
		if err == nil {
			h = Host{CloudID: cloud, IP: s[i+1:]}
		}
	}
	if err := h.Validate(); err != nil {
		return Host{}, fmt.Errorf("host %q: %w", s, ErrInvalid)
	}
	return h, nil
}
