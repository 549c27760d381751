package domain

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AllowEntry is one source range a service accepts connections from.
type AllowEntry struct {
	CIDR        string `json:"cidr"`
	Description string `json:"description"`
}

// DefaultMaxAllowEntries is the default cap on a service's allowlist.
const DefaultMaxAllowEntries = 8000

// MaxDescriptionLen bounds an allowlist entry's description (bytes).
const MaxDescriptionLen = 256

// DefaultAllowlist is a new service's allowlist: open to every address.
func DefaultAllowlist() []AllowEntry {
	return []AllowEntry{
		{CIDR: "0.0.0.0/0", Description: "any IPv4 address (default: open to the internet)"},
		{CIDR: "::/0", Description: "any IPv6 address (default: open to the internet)"},
	}
}

// AllowlistOptions are the settings an allowlist is validated against.
type AllowlistOptions struct {
	// Max is the entry cap; 0 means DefaultMaxAllowEntries.
	Max int
	// ConfirmEmpty allows an empty list, which locks everyone out.
	ConfirmEmpty bool
}

// NormalizeAllowlist validates entries and returns them in canonical form
// (a bare address becomes /32 or /128). It refuses non-canonical prefixes
// with a hint, duplicates, over-long or control-character descriptions,
// more than the cap, and an empty list without ConfirmEmpty.
func NormalizeAllowlist(entries []AllowEntry, opt AllowlistOptions) ([]AllowEntry, error) {
	max := opt.Max
	if max <= 0 {
		max = DefaultMaxAllowEntries
	}
	if len(entries) > max {
		return nil, Invalidf(CodeTooManyEntries, "allowed_ips",
			fmt.Sprintf("merge neighbouring ranges into wider CIDRs; at most %d entries are allowed", max),
			"%d entries is more than the limit of %d", len(entries), max)
	}
	if len(entries) == 0 && !opt.ConfirmEmpty {
		return nil, Invalidf(CodeEmptyAllowlist, "allowed_ips",
			"an empty allowlist refuses every connection; confirm it explicitly (confirm_empty=true, or --confirm-empty)",
			"the allowlist would be empty")
	}
	out := make([]AllowEntry, 0, len(entries))
	seen := make(map[netip.Prefix]int, len(entries))
	for i, e := range entries {
		field := fmt.Sprintf("allowed_ips[%d].cidr", i)
		p, err := ParsePrefix(field, e.CIDR, true)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[p]; dup {
			return nil, Invalidf(CodeDuplicateEntry, field, fmt.Sprintf("remove one of entries %d and %d", j, i), "%s is listed twice", p)
		}
		seen[p] = i
		if err := validateDescription(fmt.Sprintf("allowed_ips[%d].description", i), e.Description); err != nil {
			return nil, err
		}
		out = append(out, AllowEntry{CIDR: p.String(), Description: e.Description})
	}
	return out, nil
}

func validateDescription(field, d string) error {
	if len(d) > MaxDescriptionLen {
		return Invalidf(CodeInvalidDescription, field, fmt.Sprintf("shorten it to %d bytes", MaxDescriptionLen), "description is %d bytes long", len(d))
	}
	if !utf8.ValidString(d) || strings.IndexFunc(d, unicode.IsControl) >= 0 {
		return Invalidf(CodeInvalidDescription, field, "use printable text without line breaks or control characters", "description contains control characters or invalid UTF-8")
	}
	return nil
}

// AllowlistPrefixes returns the parsed prefixes of a normalised allowlist.
func AllowlistPrefixes(entries []AllowEntry) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		if p, err := netip.ParsePrefix(e.CIDR); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// IsWideOpen reports whether the allowlist admits the whole internet (the
// console warns about it).
func IsWideOpen(entries []AllowEntry) bool {
	for _, e := range entries {
		if e.CIDR == "0.0.0.0/0" || e.CIDR == "::/0" {
			return true
		}
	}
	return false
}

// AllowlistDiff returns the ranges in after and not in before (added) and
// in before and not in after (removed), each in after's and before's order.
// A changed description alone is not a change of ranges.
func AllowlistDiff(before, after []AllowEntry) (added, removed []string) {
	in := func(list []AllowEntry) map[string]bool {
		m := make(map[string]bool, len(list))
		for _, e := range list {
			m[e.CIDR] = true
		}
		return m
	}
	had, has := in(before), in(after)
	for _, e := range after {
		if !had[e.CIDR] {
			added = append(added, e.CIDR)
		}
	}
	for _, e := range before {
		if !has[e.CIDR] {
			removed = append(removed, e.CIDR)
		}
	}
	return added, removed
}

// DescribeAllowlistChange says what an allowlist change did, for the
// audit log: "revision 3, 2 entries; added 203.0.113.7/32; removed
// 0.0.0.0/0 ::/0". Long lists are cut after max bytes each with the count
// of the rest.
func DescribeAllowlistChange(revision int64, before, after []AllowEntry, max int) string {
	added, removed := AllowlistDiff(before, after)
	list := func(cidrs []string) string {
		if len(cidrs) == 0 {
			return "nothing"
		}
		var b strings.Builder
		for i, c := range cidrs {
			if b.Len()+len(c)+1 > max {
				fmt.Fprintf(&b, " … and %d more", len(cidrs)-i)
				break
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(c)
		}
		return b.String()
	}
	return fmt.Sprintf("revision %d, %d entries; added %s; removed %s", revision, len(after), list(added), list(removed))
}
