package domain

import (
	"cmp"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Tenant PostgreSQL settings (design 0021): a catalog of the parameters a
// tenant may set, each with its type, its bounds and whether PostgreSQL
// applies it on a reload or only when the server starts. A reload-only
// change is applied in place by every node; a change that needs a restart
// is pending until `moat service upgrade` moves the service to fresh
// nodes, which start with it. A running node is never restarted for a
// setting.

// SettingType is the kind of value a setting takes.
type SettingType int

const (
	// SettingInt is a plain integer.
	SettingInt SettingType = iota + 1
	// SettingReal is a decimal number.
	SettingReal
	// SettingMemory is an amount of memory: an integer with B, kB, MB,
	// GB or TB (1024 apart), or a bare integer in the setting's unit.
	SettingMemory
	// SettingDuration is a time: an integer with us, ms, s, min, h or d,
	// or a bare integer in milliseconds.
	SettingDuration
	// SettingZone is a time zone name (UTC, Europe/Paris).
	SettingZone
)

// SettingSpec is one parameter of the catalog.
type SettingSpec struct {
	Name string
	Type SettingType
	// Min and Max bound the value (as written in the catalog, in the
	// setting's syntax); none for a zone.
	Min, Max string
	// Off is a value below Min that turns the setting off (-1), if any.
	Off string
	// Unit is the size of a bare memory integer, in bytes.
	Unit int64
	// Restart: PostgreSQL reads it only when the server starts
	// (context postmaster); the others take effect on a reload.
	Restart bool
	// StandbyMin: a replica must have at least its primary's value to
	// replay its WAL (PostgreSQL refuses to start it otherwise).
	StandbyMin bool
	// Default is the value a node has when the tenant sets none
	// (PostgreSQL's, or Moat's own default).
	Default string
	Help    string
}

const (
	kB = 1024
	// block is PostgreSQL's page: the unit of shared_buffers and
	// effective_cache_size.
	block = 8 * kB
)

// settingCatalog is every parameter a tenant may set, by name.
var settingCatalog = func() map[string]SettingSpec {
	specs := []SettingSpec{
		{Name: "max_connections", Type: SettingInt, Min: "20", Max: "5000", Restart: true, StandbyMin: true, Default: "100",
			Help: "the most concurrent client connections"},
		{Name: "shared_buffers", Type: SettingMemory, Unit: block, Min: "16MB", Max: "32GB", Restart: true, Default: "128MB",
			Help: "memory for PostgreSQL's shared page cache"},
		{Name: "max_worker_processes", Type: SettingInt, Min: "1", Max: "96", Restart: true, StandbyMin: true, Default: "8",
			Help: "the most background worker processes (parallel queries, extensions)"},
		{Name: "work_mem", Type: SettingMemory, Unit: kB, Min: "64kB", Max: "2GB", Default: "4MB",
			Help: "memory per sort or hash operation before it spills to disk"},
		{Name: "maintenance_work_mem", Type: SettingMemory, Unit: kB, Min: "1MB", Max: "8GB", Default: "64MB",
			Help: "memory for VACUUM, CREATE INDEX and ALTER TABLE"},
		{Name: "effective_cache_size", Type: SettingMemory, Unit: block, Min: "8MB", Max: "1TB", Default: "4GB",
			Help: "the planner's assumption of the cache available to a query"},
		{Name: "statement_timeout", Type: SettingDuration, Min: "0", Max: "7d", Default: "0",
			Help: "ends any statement that runs longer (0: no limit)"},
		{Name: "idle_in_transaction_session_timeout", Type: SettingDuration, Min: "0", Max: "7d", Default: IdleInTransactionDefault,
			Help: "ends a session idle in an open transaction that long (0: no limit; Moat's default is " + IdleInTransactionDefault + ")"},
		{Name: "log_min_duration_statement", Type: SettingDuration, Min: "0", Max: "7d", Off: "-1", Default: "-1",
			Help: "logs every statement that runs at least this long (-1: none)"},
		{Name: "random_page_cost", Type: SettingReal, Min: "0.1", Max: "100", Default: "4",
			Help: "the planner's cost of a page read out of sequence"},
		{Name: "default_statistics_target", Type: SettingInt, Min: "1", Max: "10000", Default: "100",
			Help: "the statistics ANALYZE gathers per column"},
		{Name: "timezone", Type: SettingZone, Default: "GMT",
			Help: "the time zone of timestamps shown to sessions"},
	}
	m := make(map[string]SettingSpec, len(specs))
	for _, s := range specs {
		m[s.Name] = s
	}
	return m
}()

// IdleInTransactionDefault is the idle_in_transaction_session_timeout
// every node has unless its tenant sets another.
const IdleInTransactionDefault = "10min"

// moatSettings are PostgreSQL settings Moat sets itself: a tenant may not
// (besides every ssl* and include* name).
var moatSettings = []string{
	"archive_command", "archive_mode", "archive_timeout", "restore_command", "recovery_target_time",
	"cluster_name", "listen_addresses", "port", "unix_socket_directories", "unix_socket_permissions",
	"password_encryption", "wal_level", "max_wal_senders", "wal_keep_size", "hot_standby",
	"primary_conninfo", "primary_slot_name", "synchronous_standby_names", "synchronous_commit",
	"hba_file", "ident_file", "data_directory", "config_file", "logging_collector", "log_destination",
	"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout",
	"wal_retrieve_retry_interval", "fsync", "full_page_writes", "shared_preload_libraries",
}

// SettingCatalog returns the catalog's parameters, sorted by name.
func SettingCatalog() []SettingSpec {
	return slices.SortedFunc(maps.Values(settingCatalog), func(a, b SettingSpec) int { return strings.Compare(a.Name, b.Name) })
}

// LookupSetting returns the catalog's parameter name.
func LookupSetting(name string) (SettingSpec, bool) {
	s, ok := settingCatalog[name]
	return s, ok
}

// CodeInvalidSetting is a setting the catalog does not have, or a value
// it refuses; CodeMoatSetting a setting Moat sets itself;
// CodeSettingLowered a value a replica could not replay.
const (
	CodeInvalidSetting = "invalid_setting"
	CodeMoatSetting    = "moat_setting"
	CodeSettingLowered = "setting_lowered"
)

var (
	intRE      = regexp.MustCompile(`^-?[0-9]+$`)
	memoryRE   = regexp.MustCompile(`^([0-9]+)\s*(B|kB|MB|GB|TB)?$`)
	durationRE = regexp.MustCompile(`^(-?[0-9]+)\s*(us|ms|s|min|h|d)?$`)
	// zoneRE: UTC, EST5EDT, America/Argentina/Buenos_Aires, Etc/GMT+3.
	zoneRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z0-9][A-Za-z0-9_+-]{0,30}){0,2}$`)
)

var memoryUnits = map[string]float64{"B": 1, "kB": kB, "MB": kB * kB, "GB": kB * kB * kB, "TB": kB * kB * kB * kB}
var durationUnits = map[string]float64{"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}

// parse returns v's magnitude (bytes, milliseconds or the number) and v
// written canonically, or an error message saying what is expected.
func (s SettingSpec) parse(v string) (float64, string, string) {
	v = strings.TrimSpace(v)
	switch s.Type {
	case SettingInt:
		if !intRE.MatchString(v) {
			return 0, "", "is not an integer"
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return 0, "", "is out of range"
		}
		return float64(n), strconv.FormatInt(n, 10), ""
	case SettingReal:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, "", "is not a number"
		}
		return f, strconv.FormatFloat(f, 'g', -1, 64), ""
	case SettingMemory:
		return quantity(v, memoryRE, memoryUnits, float64(s.Unit), "is not an amount of memory: write an integer and a unit, like 64MB (B, kB, MB, GB or TB)")
	case SettingDuration:
		return quantity(v, durationRE, durationUnits, durationUnits["ms"], "is not a time: write an integer and a unit, like 30s (us, ms, s, min, h or d)")
	case SettingZone:
		if !zoneRE.MatchString(v) {
			return 0, "", "is not a time zone name"
		}
		return 0, v, ""
	}
	return 0, "", "has an unknown type"
}

// bound returns the magnitude of one of the catalog's own values.
func (s SettingSpec) bound(v string) float64 {
	f, _, msg := s.parse(v)
	if msg != "" {
		panic("setting catalog: " + s.Name + " bound " + v + " " + msg)
	}
	return f
}

// Range describes the values the setting takes ("20 to 5000").
func (s SettingSpec) Range() string {
	if s.Type == SettingZone {
		return "a time zone name such as UTC or Europe/Paris"
	}
	r := s.Min + " to " + s.Max
	if s.Off != "" {
		r += ", or " + s.Off + " for off"
	}
	return r
}

// Check returns value written canonically, or the error naming the field
// settings.<name> and the values it takes. knownZone, if not nil, tells
// whether a time zone exists (PostgreSQL refuses to start with an
// unknown one).
func (s SettingSpec) Check(value string, knownZone func(string) bool) (string, error) {
	field := "settings." + s.Name
	f, canon, msg := s.parse(value)
	if msg != "" {
		return "", Invalidf(CodeInvalidSetting, field, "give "+s.Range(), "%q %s", value, msg)
	}
	if s.Type == SettingZone {
		if knownZone != nil && !knownZone(canon) {
			return "", Invalidf(CodeInvalidSetting, field, "give a name of the IANA time zone database, such as UTC or Europe/Paris", "time zone %q is unknown", value)
		}
		return canon, nil
	}
	if s.Off != "" && f == s.bound(s.Off) {
		return canon, nil
	}
	if f < s.bound(s.Min) || f > s.bound(s.Max) {
		return "", Invalidf(CodeInvalidSetting, field, "give "+s.Range(), "%s is out of range", value)
	}
	return canon, nil
}

// isMoatSetting reports whether Moat sets the PostgreSQL setting name.
func isMoatSetting(name string) bool {
	return slices.Contains(moatSettings, name) || strings.HasPrefix(name, "ssl") || strings.HasPrefix(name, "include")
}

// unknownSetting is the error for a name the catalog does not have.
func unknownSetting(name string) error {
	field := "settings." + name
	if isMoatSetting(name) {
		return Invalidf(CodeMoatSetting, field, "remove it: Moat sets it for replication, TLS and backups", "%s is Moat's own", name)
	}
	hint := "settings a tenant may set: " + strings.Join(slices.Sorted(maps.Keys(settingCatalog)), ", ")
	if close := closeSettings(name); len(close) > 0 {
		hint = "did you mean " + strings.Join(close, " or ") + "? " + hint
	}
	return Invalidf(CodeInvalidSetting, field, hint, "no setting %q", name)
}

// closeSettings returns up to three catalog names close to name (an edit
// distance of at most a third of its length, or one containing it).
func closeSettings(name string) []string {
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	n := strings.ToLower(name)
	for k := range settingCatalog {
		d := editDistance(n, k)
		if d <= max(2, len(n)/3) || len(n) >= 4 && strings.Contains(k, n) {
			cs = append(cs, cand{k, d})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int { return cmp.Or(cmp.Compare(a.d, b.d), strings.Compare(a.name, b.name)) })
	var out []string
	for _, c := range cs[:min(3, len(cs))] {
		out = append(out, c.name)
	}
	return out
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, sub)
		}
		prev = cur
	}
	return prev[len(b)]
}

// SettingsChange is one request's change of a service's settings: a value
// sets the setting, nil removes it (the default again).
type SettingsChange map[string]*string

// SettingsResult says what a change did: the settings it changed that
// nodes reload (applied in place), and those that need a restart
// (pending until the service is upgraded).
type SettingsResult struct {
	Reload, Restart []string
}

// ChangeSettings applies ch to the service's settings, checked against
// the catalog (the first bad name, in name order, is the error) and the
// service's state (no other operation under way: 409). A value that
// needs a replica to have at least its primary's (StandbyMin) cannot go
// below what the service's nodes run with: the fresh nodes of an upgrade
// replay the current primary's WAL before they take over.
func (s *Service) ChangeSettings(ch SettingsChange, knownZone func(string) bool, now time.Time) (SettingsResult, error) {
	var res SettingsResult
	if len(ch) == 0 {
		return res, Invalidf(CodeRequired, "settings", `give at least one setting, like {"statement_timeout": "30s"}; null removes one`, "settings is empty")
	}
	if err := checkPlanned(s); err != nil {
		return res, err
	}
	next := maps.Clone(s.Settings)
	if next == nil {
		next = map[string]string{}
	}
	for _, name := range slices.Sorted(maps.Keys(ch)) {
		spec, ok := settingCatalog[name]
		if !ok {
			return res, unknownSetting(name)
		}
		v := ch[name]
		if v == nil {
			delete(next, name)
			continue
		}
		canon, err := spec.Check(*v, knownZone)
		if err != nil {
			return res, err
		}
		next[name] = canon
	}
	for _, name := range slices.Sorted(maps.Keys(ch)) {
		spec := settingCatalog[name]
		if next[name] == s.Settings[name] {
			continue
		}
		if spec.StandbyMin {
			cur, was := spec.effective(next), spec.effective(s.NodeSettings)
			if spec.bound(cur) < spec.bound(was) {
				return res, Conflictf(CodeSettingLowered, "settings."+name,
					"keep it at "+was+" or above: a fresh node replays the current primary's WAL, which needs at least the primary's value",
					"%s cannot go below %s, the value the service's nodes run with", name, was)
			}
		}
		if spec.Restart {
			res.Restart = append(res.Restart, name)
		} else {
			res.Reload = append(res.Reload, name)
		}
	}
	if len(next) == 0 {
		next = nil
	}
	s.Settings, s.UpdatedAt = next, now
	return res, nil
}

// effective is the setting's value in set, or its default.
func (s SettingSpec) effective(set map[string]string) string {
	if v, ok := set[s.Name]; ok {
		return v
	}
	return s.Default
}

// restartSettings are the service's settings that need a restart: what
// a fresh node of an upgrade starts with.
func (s *Service) restartSettings() map[string]string {
	var out map[string]string
	for k, v := range s.Settings {
		if settingCatalog[k].Restart {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// PendingRestart lists, sorted, the service's settings that need a
// restart and differ from what its nodes run with: an upgrade applies
// them.
func (s *Service) PendingRestart() []string {
	want := s.restartSettings()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(settingCatalog)) {
		a, inWant := want[k]
		b, inNodes := s.NodeSettings[k]
		if inWant != inNodes || a != b {
			out = append(out, k)
		}
	}
	return out
}

// NodeSettings is the tenant settings node n of svc runs with: the
// service's reload-only settings as they are now, and the restart ones
// the node started with (Node.Settings; a node never restarts for one).
func NodeSettings(svc *Service, n *Node) map[string]string {
	var out map[string]string
	put := func(k, v string) {
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	for k, v := range svc.Settings {
		if spec, ok := settingCatalog[k]; ok && !spec.Restart {
			put(k, v)
		}
	}
	for k, v := range n.Settings {
		if spec, ok := settingCatalog[k]; ok && spec.Restart {
			put(k, v)
		}
	}
	return out
}

// SettingsApplying reports whether a running node of svc among nodes has
// not yet applied the last settings change (SettingsRevision).
func (s *Service) SettingsApplying(nodes []*Node) bool {
	for _, n := range nodes {
		if n.ServiceID == s.ID && n.State == StateRunning && n.AppliedRevision < s.SettingsRevision {
			return true
		}
	}
	return false
}

// quantity parses v, an integer and an optional unit as re captures them,
// into its value in the base unit (units; bare when it has no unit) and
// its normalised text; what is the complaint when v is no such thing.
func quantity(v string, re *regexp.Regexp, units map[string]float64, bare float64, what string) (float64, string, string) {
	m := re.FindStringSubmatch(v)
	if m == nil {
		return 0, "", what
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, "", "is out of range"
	}
	if m[2] == "" {
		return float64(n) * bare, m[1], ""
	}
	return float64(n) * units[m[2]], m[1] + m[2], ""
}
