package domain

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Support requests: a tenant asks the platform operator for something only
// an operator may do (today: a higher quota), and the operator approves or
// declines it with a reply. Approving a quota increase raises the quota
// through the same path as an operator's quota change.

// PrefixSupport is the ID prefix of support requests.
const PrefixSupport = "sup-"

// SupportQuotaIncrease is the type of a request for a higher quota.
const SupportQuotaIncrease = "quota_increase"

// States of a support request.
const (
	StateOpen     = "open"
	StateApproved = "approved"
	StateDeclined = "declined"
)

// SupportMachine: open → approved | declined; both are final.
var SupportMachine = Machine{Name: "support request", Initial: StateOpen, Next: map[string][]string{
	StateOpen: {StateApproved, StateDeclined},
}}

// Quota resources a request may ask more of (QuotaUpdate's fields).
const (
	QuotaVPCs     = "vpcs"
	QuotaServices = "services"
	QuotaNodes    = "nodes"
)

// Limits of a support request.
const (
	// MaxSupportMessageLen bounds a request's message and an operator's
	// reply (bytes).
	MaxSupportMessageLen = 2000
	// MaxOpenSupportRequests bounds a project's open requests, so that a
	// script cannot flood the operator's queue.
	MaxOpenSupportRequests = 10
)

// Error codes of support requests.
const (
	CodeInvalidResource = "invalid_resource"
	CodeInvalidType     = "invalid_type"
	CodeInvalidMessage  = "invalid_message"
	CodeTooManyOpen     = "too_many_open_requests"
)

// SupportRequest is a tenant's request to the operator. Current is the
// project's quota of Resource when the request was filed; Requested is the
// quota asked for.
type SupportRequest struct {
	Meta
	Type      string     `json:"type"`
	Resource  string     `json:"resource"`
	Requested int        `json:"requested"`
	Current   int        `json:"current"`
	Message   string     `json:"message"`
	Requester string     `json:"requester"`
	Reply     string     `json:"reply,omitempty"`
	DecidedBy string     `json:"decided_by,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
}

func (*SupportRequest) Kind() string   { return "support_request" }
func (*SupportRequest) Parent() string { return "" }

// SupportRequestInput is what a tenant files.
type SupportRequestInput struct {
	Type      string // "" means SupportQuotaIncrease
	Resource  string
	Requested int
	Message   string
	Requester string
}

// QuotaOf returns project p's current quota of resource (vpcs, services,
// nodes), with def the platform's defaults.
func QuotaOf(p *Project, def Quotas, resource string) (int, error) {
	switch resource {
	case QuotaVPCs:
		return p.VPCQuota, nil
	case QuotaServices:
		return p.Limits(def).Services, nil
	case QuotaNodes:
		return p.Limits(def).Nodes, nil
	case "":
		return 0, Invalidf(CodeRequired, "resource", "give vpcs, services or nodes", "the quota to raise is required")
	}
	return 0, Invalidf(CodeInvalidResource, "resource", "give vpcs, services or nodes", "%q is not a quota", resource)
}

// maxQuotaOf is the largest quota an operator may set of resource.
func maxQuotaOf(resource string) int {
	if resource == QuotaVPCs {
		return MaxVPCQuota
	}
	return MaxQuota
}

// NewSupportRequest validates in against project p (its quotas, with def
// the platform's defaults) and its open requests, and returns the open
// request it files at now.
func NewSupportRequest(in SupportRequestInput, p *Project, def Quotas, open int, now time.Time) (*SupportRequest, error) {
	typ := in.Type
	if typ == "" {
		typ = SupportQuotaIncrease
	}
	if typ != SupportQuotaIncrease {
		return nil, Invalidf(CodeInvalidType, "type", "use quota_increase (the only type of request so far)", "%q is not a type of support request", typ)
	}
	cur, err := QuotaOf(p, def, in.Resource)
	if err != nil {
		return nil, err
	}
	if hi := maxQuotaOf(in.Resource); in.Requested <= cur || in.Requested > hi {
		return nil, Invalidf(CodeInvalidQuota, "requested",
			fmt.Sprintf("ask for more than the current %d and at most %d, e.g. %d", cur, hi, min(cur+2, hi)),
			"a %s quota of %d is not an increase of the current %d", strings.TrimSuffix(in.Resource, "s"), in.Requested, cur)
	}
	msg, err := NormalizeSupportText("message", in.Message, true)
	if err != nil {
		return nil, err
	}
	if open >= MaxOpenSupportRequests {
		return nil, Conflictf(CodeTooManyOpen, "", "wait for the operator to answer the open ones (moat support list)",
			"the project already has %d open support requests", open)
	}
	now = now.UTC()
	return &SupportRequest{
		Meta:      Meta{ID: NewID(PrefixSupport), ProjectID: p.ID, State: SupportMachine.Initial, CreatedAt: now, UpdatedAt: now},
		Type:      typ,
		Resource:  in.Resource,
		Requested: in.Requested,
		Current:   cur,
		Message:   msg,
		Requester: in.Requester,
	}, nil
}

// NormalizeSupportText trims a request's message or an operator's reply
// (field names which) and checks it: at most MaxSupportMessageLen bytes of
// printable UTF-8 text (new lines and tabs allowed); required says whether
// it may be empty.
func NormalizeSupportText(field, s string, required bool) (string, error) {
	s = strings.TrimSpace(s)
	what := "a message"
	if field == "reply" {
		what = "a reply"
	}
	if s == "" {
		if required {
			return "", Invalidf(CodeRequired, field, "say in a sentence or two what you need it for", "%s is required", what)
		}
		return "", nil
	}
	if len(s) > MaxSupportMessageLen {
		return "", Invalidf(CodeInvalidMessage, field, fmt.Sprintf("shorten it to %d bytes", MaxSupportMessageLen), "%s of %d bytes is too long", what, len(s))
	}
	if !utf8.ValidString(s) {
		return "", Invalidf(CodeInvalidMessage, field, "send UTF-8 text", "%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r != '\n' && r != '\t' && !unicode.IsPrint(r) && r != ' ' {
			return "", Invalidf(CodeInvalidMessage, field, "remove control characters", "%s holds the control character %U", what, r)
		}
	}
	return s, nil
}

// Approve approves the open request r by operator at now, with an
// optional reply. It returns the quota to set (0 when the project's
// quota, current, already reaches the request).
func (r *SupportRequest) Approve(operator, reply string, current int, now time.Time) (int, error) {
	reply, err := NormalizeSupportText("reply", reply, false)
	if err != nil {
		return 0, err
	}
	if err := r.transition(SupportMachine, StateApproved, now.UTC()); err != nil {
		return 0, err
	}
	r.decided(operator, reply, now)
	if current >= r.Requested {
		return 0, nil
	}
	return r.Requested, nil
}

// Decline declines the open request r by operator at now; the reply,
// saying why, is required.
func (r *SupportRequest) Decline(operator, reply string, now time.Time) error {
	if strings.TrimSpace(reply) == "" {
		return Invalidf(CodeRequired, "reply", `tell the requester why, e.g. --reply "the region is full until March"`, "a reply is required to decline")
	}
	reply, err := NormalizeSupportText("reply", reply, true)
	if err != nil {
		return err
	}
	if err := r.transition(SupportMachine, StateDeclined, now.UTC()); err != nil {
		return err
	}
	r.decided(operator, reply, now)
	return nil
}

func (r *SupportRequest) decided(operator, reply string, now time.Time) {
	t := now.UTC()
	r.DecidedBy, r.Reply, r.DecidedAt = operator, reply, &t
}
