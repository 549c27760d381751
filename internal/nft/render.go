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
	for _, s := range c.tableSets() {
		kind := "set"
		if s.vmap {
			kind = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n\t\tflags interval\n", kind, s.name, typeName(s.v4, s.vmap))
		var elems []string
		for _, sp := range s.spans {
			elems = append(elems, spanText(sp))
		}
		for i, m := range s.jumps {
			elems = append(elems, spanText(m.span)+" : jump "+s.jumps[i].chain)
		}
		if len(elems) > 0 {
			b.WriteString("\t\telements = {\n")
			for i, e := range elems {
				b.WriteString("\t\t\t" + e)
				if i < len(elems)-1 {
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
	b.WriteString("\t}\n")
	for _, f := range c.families() {
		for _, sh := range f.shards {
			fmt.Fprintf(&b, "\tchain %s {\n", sh.name)
			for _, r := range c.shardRules(f.v4, sh.name) {
				b.WriteString("\t\t" + r.text + "\n")
			}
			b.WriteString("\t}\n")
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func typeName(v4, vmap bool) string {
	t := "ipv6_addr"
	if v4 {
		t = "ipv4_addr"
	}
	if vmap {
		t += " : verdict"
	}
	return t
}

// spanText writes a range as a prefix when it is exactly one, else as
// "from-to".
func spanText(sp span) string {
	if p, ok := sp.prefix(); ok {
		return p.String()
	}
	return sp.from.String() + "-" + sp.to.String()
}
