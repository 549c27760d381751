package nft

import (
	"fmt"
	"strings"
)

// Render returns the ruleset Apply installs for p as nft(8) text. The text
// starts by creating and deleting the table, so that `nft -f` replaces the
// table atomically, as Apply does. Set elements are the merged ranges,
// written as a prefix when a range is exactly one prefix and as "from-to"
// otherwise.
func Render(p Policy) (string, error) {
	c, err := compile(p)
	if err != nil {
		return "", fmt.Errorf("render firewall: %w", err)
	}
	return c.render(), nil
}

func (c *compiled) render() string {
	var b strings.Builder
	b.WriteString("# The firewall of one Moat node: one table, replaced atomically.\n")
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range c.sets() {
		typ := "ipv6_addr"
		if s.v4 {
			typ = "ipv4_addr"
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", s.name, typ)
		if len(s.spans) > 0 {
			b.WriteString("\t\telements = {\n")
			for i, sp := range s.spans {
				b.WriteString("\t\t\t")
				if p, ok := sp.prefix(); ok {
					b.WriteString(p.String())
				} else {
					b.WriteString(sp.from.String() + "-" + sp.to.String())
				}
				if i < len(s.spans)-1 {
					b.WriteByte(',')
				}
				b.WriteByte('\n')
			}
			b.WriteString("\t\t}\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("\tchain input {\n")
	b.WriteString("\t\ttype filter hook input priority filter; policy drop;\n")
	for _, r := range c.rules() {
		b.WriteString("\t\t" + r.text + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
