package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// print writes v in the chosen output format.
func (a *app) print(v any) error { return render(a.stdout, a.output, v) }

// valueField returns the JSON field that output format prints alone:
// "id" for -o id, FIELD (or a dotted path, connection.address) for
// -o value=FIELD.
func valueField(format string) (string, bool) {
	if format == "id" {
		return "id", true
	}
	f, ok := strings.CutPrefix(format, "value=")
	return f, ok && f != ""
}

// renderValue writes field of v (of each element when v is a list), one
// per line, so that a shell can capture it: export VPC=$(moat vpc create
// ... -o id).
func renderValue(w io.Writer, field string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	var objs []map[string]any
	if reflect.ValueOf(v).Kind() == reflect.Slice {
		err = json.Unmarshal(data, &objs)
	} else {
		objs = make([]map[string]any, 1)
		err = json.Unmarshal(data, &objs[0])
	}
	if err != nil {
		return fmt.Errorf("-o value=%s: the output is not an object: %w", field, err)
	}
	for _, o := range objs {
		val, ok := lookupField(o, field)
		if !ok {
			keys := make([]string, 0, len(o))
			for k := range o {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return withHint(fmt.Errorf("the output has no field %q", field), "use one of: "+strings.Join(keys, ", "))
		}
		if _, err := fmt.Fprintln(w, val); err != nil {
			return err
		}
	}
	return nil
}

// lookupField returns the value at path, a JSON field name or a dotted
// path into nested objects (connection.address).
func lookupField(o map[string]any, path string) (any, bool) {
	var v any = o
	for _, name := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[name]; !ok {
			return nil, false
		}
	}
	return v, true
}

// render writes v as indented JSON (the API object as-is; a list, all of
// whose pages were read, as the API's {"items": [...]}), as a table of
// aligned columns, or one field alone (-o id, -o value=FIELD).
func render(w io.Writer, format string, v any) error {
	if field, ok := valueField(format); ok {
		return renderValue(w, field, v)
	}
	if format == "json" {
		if reflect.ValueOf(v).Kind() == reflect.Slice {
			v = struct {
				Items any `json:"items"`
			}{v}
		}
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var after []string
	switch v := v.(type) {
	case apitype.Project:
		projectRows(tw, v)
	case []apitype.Project:
		projectRows(tw, v...)
	case apitype.Token:
		tokenRows(tw, v)
		if v.Secret != "" {
			after = append(after, "secret: "+v.Secret, "Store the secret now: it is not shown again.")
		}
	case []apitype.Token:
		tokenRows(tw, v...)
	case apitype.Host:
		hostRows(tw, v)
		after = hostNotes(v)
	case []apitype.Host:
		hostRows(tw, v...)
	case apitype.HostCreated:
		hostRows(tw, v.Host)
		after = hostCreatedNotes(v)
	case []apitype.Region:
		row(tw, "CODE", "AZS")
		for _, r := range v {
			row(tw, r.Code, strings.Join(r.AZs, ","))
		}
	case apitype.VPC:
		vpcRows(tw, v)
	case []apitype.VPC:
		vpcRows(tw, v...)
	case apitype.Peering:
		peeringRows(tw, v)
	case []apitype.Peering:
		peeringRows(tw, v...)
	case apitype.Service:
		serviceRows(tw, v)
		after = serviceNotes(v)
	case []apitype.Service:
		serviceRows(tw, v...)
	case apitype.Allowlist:
		row(tw, "CIDR", "DESCRIPTION")
		for _, e := range v.AllowedIPs {
			row(tw, e.CIDR, e.Description)
		}
		state := "applied"
		if !v.Applied {
			state = "pending (applied revision " + strconv.FormatInt(v.AppliedRevision, 10) + ")"
		}
		after = append(after, fmt.Sprintf("revision %d, %s", v.Revision, state))
		if len(v.AllowedIPs) == 0 {
			after = append(after, "warning: the allowlist is empty: every connection is refused")
		} else if v.WideOpen {
			after = append(after, "warning: the service is open to the whole internet (0.0.0.0/0 or ::/0)")
		}
	case apitype.Operation:
		operationRows(tw, v)
	case []apitype.Operation:
		operationRows(tw, v...)
	case []apitype.Backup:
		row(tw, "LABEL", "TIMELINE", "START", "END", "SIZE", "STORED", "KEY")
		for _, b := range v {
			row(tw, b.Label, strconv.FormatUint(uint64(b.Timeline), 10), ts(b.StartTime), ts(b.EndTime),
				strconv.FormatInt(b.Size, 10), strconv.FormatInt(b.StoredSize, 10), b.KeyFingerprint)
		}
		if len(v) > 0 {
			after = append(after, "restorable to any time after "+v[0].EndTime.UTC().Format(time.RFC3339Nano)+" (moat service restore --from SVC --to-time T)")
		}
	case []apitype.AuditEntry:
		row(tw, "SEQ", "TIME", "ACTOR", "PROJECT", "ACTION", "TARGET", "OUTCOME", "DETAIL")
		for _, e := range v {
			row(tw, strconv.FormatInt(e.Seq, 10), ts(e.Time), e.Actor, dash(e.ProjectID), e.Action, dash(e.Target), e.Outcome, e.Detail)
		}
	case apitype.SupportRequest:
		supportRows(tw, v)
	case []apitype.SupportRequest:
		supportRows(tw, v...)
	case apitype.AuditVerify:
		if v.OK {
			after = append(after, "ok")
		} else {
			after = append(after, fmt.Sprintf("broken at entry %d: %s", v.FirstBad, v.Problem))
		}
	default:
		if !simTable(tw, v) && !opsTable(tw, v) {
			return fmt.Errorf("no table format for %T; use -o json", v)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range after {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

func row(w io.Writer, cols ...string) {
	fmt.Fprintln(w, strings.TrimRight(strings.Join(cols, "\t"), "\t"))
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stateOf(state string, info *apitype.StateInfo) string {
	if info != nil && info.Code != "" {
		return state + " (" + info.Code + ")"
	}
	return state
}

func projectRows(w io.Writer, ps ...apitype.Project) {
	row(w, "ID", "NAME", "STATE", "VPC_QUOTA", "CREATED")
	for _, p := range ps {
		row(w, p.ID, p.Name, p.State, strconv.Itoa(p.VPCQuota), ts(p.CreatedAt))
	}
}

func tokenRows(w io.Writer, toks ...apitype.Token) {
	row(w, "ID", "NAME", "ROLE", "CREATED")
	for _, t := range toks {
		row(w, t.ID, dash(t.Name), t.Role, ts(t.CreatedAt))
	}
}

func vpcRows(w io.Writer, vs ...apitype.VPC) {
	row(w, "ID", "NAME", "REGION", "CIDR", "STATE", "CLOUD_VPC_ID", "CREATED")
	for _, v := range vs {
		row(w, v.ID, v.Name, v.Region, v.CIDR, stateOf(v.State, v.StateInfo), dash(v.CloudVPCID), ts(v.CreatedAt))
	}
}

func peeringRows(w io.Writer, ps ...apitype.Peering) {
	row(w, "ID", "VPC", "PEER_ACCOUNT", "PEER_VPC", "PEER_REGION", "PEER_CIDRS", "STATE", "CLOUD_PEERING_ID")
	for _, p := range ps {
		row(w, p.ID, p.VPCID, p.PeerAccountID, p.PeerVPCID, p.PeerRegion, strings.Join(p.PeerCIDRs, ","), stateOf(p.State, p.StateInfo), dash(p.CloudPeeringID))
	}
}

func serviceRows(w io.Writer, ss ...apitype.Service) {
	row(w, "ID", "NAME", "REGION", "NODES", "ACCESS", "ALLOWED_IPS", "STATE", "CREATED")
	for _, s := range ss {
		access := "public"
		if s.VPCID != "" {
			access = s.VPCID
		}
		allowed := strconv.Itoa(len(s.AllowedIPs))
		if s.WideOpen {
			allowed += " (open)"
		}
		row(w, s.ID, s.Name, s.Region, strconv.Itoa(s.Nodes), access, allowed, stateOf(s.State, s.StateInfo), ts(s.CreatedAt))
	}
}

// serviceNotes are the lines under a single service: how to connect, an
// in-flight operation, and its nodes (state, volume, WAL archiving).
func serviceNotes(s apitype.Service) []string {
	var out []string
	if c := s.Connection; c != nil {
		out = append(out, fmt.Sprintf("connect: host=%s port=%d dbname=%s user=%s sslmode=%s", c.Host, c.Port, c.Database, c.User, c.SSLMode))
	}
	if c := s.Connection; c != nil && c.ReadOnlyHost != "" {
		out = append(out, "read-only: host="+c.ReadOnlyHost+" (the replicas)")
	}
	if c := s.Connection; c != nil && c.MultiHost != "" {
		out = append(out, "multi-host: "+c.MultiHost)
	}
	if r := s.Replication; r != nil {
		l := "replication: " + r.Mode
		if r.Condition != nil {
			l += " (" + r.Condition.Message + ")"
		}
		out = append(out, l)
	}
	if h := s.Health; h != nil && h.Status != "healthy" {
		for _, c := range h.Conditions {
			out = append(out, h.Status+": "+c.Message)
		}
	}
	if s.OperationID != "" {
		out = append(out, "operation: "+s.OperationID)
	}
	if len(s.Settings) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(s.Settings)) {
			kv = append(kv, k+"="+s.Settings[k])
		}
		out = append(out, "settings: "+strings.Join(kv, " "))
	}
	if s.SettingsApplying {
		out = append(out, "settings: being reloaded by the nodes")
	}
	if len(s.PendingRestart) > 0 {
		out = append(out, "pending restart: "+strings.Join(s.PendingRestart, ", ")+" (moat service upgrade "+s.ID+" applies them on fresh nodes)")
	}
	out = append(out, nodeTable(s.NodeList)...)
	for _, n := range s.NodeList {
		out = append(out, nodeNotes(n)...)
		a := n.Archive
		switch {
		case a == nil:
		case a.Failing:
			out = append(out, fmt.Sprintf("warning: WAL archiving of node %s is failing (last failed %s at %s; last archived %s at %s): commits since are not restorable",
				n.ID, dash(a.LastFailedWAL), ts(a.LastFailedAt), dash(a.LastArchivedWAL), ts(a.LastArchivedAt)))
		case a.LastArchivedWAL != "":
			out = append(out, fmt.Sprintf("archive: %s at %s", a.LastArchivedWAL, ts(a.LastArchivedAt)))
		}
	}
	return out
}

// nodeTable is a service's nodes: where each runs, its role, and on a
// replica whether it streams, its sync state and its lag.
func nodeTable(nodes []apitype.Node) []string {
	if len(nodes) == 0 {
		return nil
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row(tw, "NODE", "HOST", "AZ", "ROLE", "STATE", "ADDRESS", "STREAMING", "SYNC", "LAG")
	for _, n := range nodes {
		streaming, lag := "-", "-"
		if n.Role == apitype.RoleReplica {
			streaming, lag = strconv.FormatBool(n.Streaming), strconv.FormatUint(n.LagBytes, 10)+" B"
		}
		row(tw, n.ID, dash(n.Host), n.AZ, dash(n.Role), stateOf(n.State, n.StateInfo), dash(n.Address), streaming, dash(n.SyncState), lag)
	}
	tw.Flush() // writes to a strings.Builder, which does not fail
	return strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
}

func operationRows(w io.Writer, ops ...apitype.Operation) {
	row(w, "ID", "TYPE", "TARGET", "VPC", "STATE", "ERROR", "UPDATED", "BACKUP")
	for _, o := range ops {
		errText := "-"
		if o.Error != nil {
			errText = o.Error.Code + ": " + o.Error.Message
		}
		row(w, o.ID, o.Type, o.TargetID, dash(o.VPCID), o.State, errText, ts(o.UpdatedAt), dash(o.BackupLabel))
	}
}

// nodeNotes are a node's lines under its service's node table: its
// volume, and why it failed.
func nodeNotes(n apitype.Node) []string {
	var out []string
	if v := n.Volume; v != nil {
		out = append(out, "node "+n.ID+": "+volumeText(v))
	}
	if i := n.StateInfo; i != nil && i.Message != "" {
		out = append(out, fmt.Sprintf("warning: node %s: %s", n.ID, i.Message))
	}
	return out
}

// volumeText describes an encrypted volume: "volume LUKS2
// aes-xts-plain64 (userspace): 1.5 GiB of 10 GiB used", FULL or KEY LOST
// when it is.
func volumeText(v *apitype.NodeVolume) string {
	engine := ""
	if v.Engine != "" {
		engine = " (" + v.Engine + ")"
	}
	line := fmt.Sprintf("volume %s %s%s: %s of %s used", v.Format, v.Cipher, engine, byteSize(v.Used), byteSize(v.Size))
	if v.Full {
		line += ", FULL"
	}
	if v.Lost {
		line += ", KEY LOST"
	}
	return line
}

// byteSize is b in binary units (1.5 GiB).
func byteSize(b int64) string {
	const unit = 1024
	if b < unit {
		return strconv.FormatInt(b, 10) + " B"
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
