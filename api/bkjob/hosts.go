package bkjob

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fleetjob/fleetjob/schemas"
)

// Hosts of the BlueKing surface: {bk_cloud_id, ip}, host ids and server
// objects.

// bkIP is a host as BlueKing writes it in requests.
type bkIP struct {
	HostID  bkInt  `json:"bk_host_id"`
	CloudID bkInt  `json:"bk_cloud_id"`
	IP      string `json:"ip"`
}

// bkHostRef is a host in answers; bk_host_id only when the host has one.
type bkHostRef struct {
	HostID  int64  `json:"bk_host_id,omitempty"`
	CloudID int64  `json:"bk_cloud_id"`
	IP      string `json:"ip"`
}

// bkServer is BlueKing's set of hosts. fleetjob has no CMDB: dynamic
// groups and topology nodes are refused, host ids are those agents
// registered with (--host-id).
type bkServer struct {
	HostIDList       []bkInt           `json:"host_id_list"`
	IPList           []bkIP            `json:"ip_list"`
	DynamicGroupList []json.RawMessage `json:"dynamic_group_list"`
	TopoNodeList     []json.RawMessage `json:"topo_node_list"`
}

// bkHostIndex maps BlueKing host ids to hosts and back: the ids a job
// recorded when it was submitted, then those of the registered agents.
type bkHostIndex struct {
	byID   map[int64]schemas.Host
	byHost map[schemas.Host]int64
}

// bkExtraHostIDs is the JobSpec.Extra key holding the host ids a job's
// hosts had when it was submitted (JSON: "cloud:ip" → id).
const bkExtraHostIDs = "bk_host_ids"

func (s *Surface) bkHosts(spec *schemas.JobSpec) *bkHostIndex {
	x := &bkHostIndex{byID: map[int64]schemas.Host{}, byHost: map[schemas.Host]int64{}}
	if spec != nil && spec.Extra[bkExtraHostIDs] != "" {
		var m map[string]int64
		if json.Unmarshal([]byte(spec.Extra[bkExtraHostIDs]), &m) == nil {
			for k, id := range m {
				if h, err := schemas.ParseHost(k); err == nil {
					x.byID[id], x.byHost[h] = h, id
				}
			}
		}
	}
	if s.core.Agents == nil {
		return x
	}
	for _, a := range s.core.Agents.All() {
		if a.HostID <= 0 {
			continue
		}
		h := a.Host()
		if _, ok := x.byID[a.HostID]; !ok {
			x.byID[a.HostID] = h
		}
		if _, ok := x.byHost[h]; !ok {
			x.byHost[h] = a.HostID
		}
	}
	return x
}

func (x *bkHostIndex) ref(h schemas.Host) bkHostRef {
	return bkHostRef{HostID: x.byHost[h], CloudID: h.CloudID, IP: h.IP}
}

// record returns the Extra value that keeps the ids of hosts for later
// answers, or "" when none has one.
func (x *bkHostIndex) record(hosts ...[]schemas.Host) string {
	m := map[string]int64{}
	for _, hs := range hosts {
		for _, h := range hs {
			if id := x.byHost[h]; id > 0 {
				m[hostKey(h)] = id
			}
		}
	}
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// hostKey writes a host as schemas.ParseHost reads it back: "cloud:ip",
// with an IPv6 address bracketed ("0:fe80::1" is itself an IPv6 address).
func hostKey(h schemas.Host) string {
	if strings.Contains(h.IP, ":") {
		return fmt.Sprintf("%d:[%s]", h.CloudID, h.IP)
	}
	return h.String()
}

// targets resolves target_server, which must name at least one host.
func (x *bkHostIndex) targets(srv *bkServer, v *bkInvalid) []schemas.Host {
	before := len(v.fe)
	hosts := x.resolve("target_server", srv, v)
	if len(hosts) == 0 && len(v.fe) == before {
		v.addCode(bkCodeServerEmpty, "target_server", "no target host: give host_id_list or ip_list")
	}
	return hosts
}

// resolve turns a server object into hosts. As bk-job documents,
// ip_list is ignored when host_id_list is given.
func (x *bkHostIndex) resolve(field string, srv *bkServer, v *bkInvalid) []schemas.Host {
	if srv == nil {
		return nil
	}
	if len(srv.DynamicGroupList) > 0 {
		v.addCode(bkCodeNotSupported, field+".dynamic_group_list", "fleetjob has no CMDB dynamic groups; list the hosts in host_id_list or ip_list")
	}
	if len(srv.TopoNodeList) > 0 {
		v.addCode(bkCodeNotSupported, field+".topo_node_list", "fleetjob has no CMDB topology; list the hosts in host_id_list or ip_list")
	}
	var hosts []schemas.Host
	if len(srv.HostIDList) > 0 {
		for i, n := range srv.HostIDList {
			f := fmt.Sprintf("%s.host_id_list[%d]", field, i)
			h, ok := x.byID[n.V]
			switch {
			case !n.Set || n.V < 1:
				v.add(f, "want a positive host id")
			case !ok:
				v.addCode(bkCodeHostIDNotExist, f, "no agent has host id %d", n.V)
			default:
				hosts = append(hosts, h)
			}
		}
		return hosts
	}
	for i, ip := range srv.IPList {
		if h, ok := bkHostOf(fmt.Sprintf("%s.ip_list[%d]", field, i), ip, v); ok {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// bkHostOf validates one {bk_cloud_id, ip}.
func bkHostOf(field string, ip bkIP, v *bkInvalid) (schemas.Host, bool) {
	ok := true
	if !ip.CloudID.Set {
		v.add(field+".bk_cloud_id", "required")
		ok = false
	}
	h := schemas.Host{CloudID: ip.CloudID.V, IP: strings.TrimSpace(ip.IP)}
	if err := h.Validate(); err != nil {
		v.add(field, "%v", err)
		ok = false
	}
	return h, ok
}
