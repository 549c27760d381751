package domain

import (
	"regexp"
	"testing"
)

func TestNodeUser(t *testing.T) {
	// useradd's default NAME_REGEX, and at most 32 bytes.
	valid := regexp.MustCompile(`^[a-z][-a-z0-9_]{0,31}$`)
	id := NewID(PrefixNode)
	cases := []struct{ id, want string }{
		{id, "moat-n-" + id[len(PrefixNode):]},
		{"node-abcdefghijklmnop", "moat-n-abcdefghijklmnop"},
		{"nod-test1", ""},
		{"node-ABCDEFGHIJKLMNOP", ""},
		{"abcdefghijklmnop", ""},
	}
	seen := map[string]string{}
	for _, c := range cases {
		got := NodeUser(c.id)
		if c.want != "" && got != c.want {
			t.Errorf("NodeUser(%q) = %q, want %q", c.id, got, c.want)
		}
		if !valid.MatchString(got) {
			t.Errorf("NodeUser(%q) = %q: not a valid user name", c.id, got)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("NodeUser(%q) = NodeUser(%q) = %q", c.id, other, got)
		}
		seen[got] = c.id
		if NodeUser(c.id) != got {
			t.Errorf("NodeUser(%q) is not deterministic", c.id)
		}
	}
}
