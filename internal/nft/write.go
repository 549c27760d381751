package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Writing whole tables: the table, its chains, sets, maps and rules, in
// one transaction.

// replace writes the whole table for c in one transaction and verifies it.
func (t *nsTable) replace(c *compiled) error {
	if err := t.write(c); err != nil {
		return err
	}
	return t.verify(c)
}

// write installs c in one transaction. When the table already has its
// input chain, the chain (and so its hook) stays: its rules are flushed and
// added again, pointing at new sets of the other generation, and the old
// sets are deleted, all in the same transaction. Packets see the old rules
// and sets until the commit and the new ones after it.
//
// A transient failure (retry.go) is retried, the table as it was. Only when
// the kernel refuses to change the table in place for what it holds
// (classMalformed), or there is no table, is it deleted and created anew,
// and then in the same transaction: packets see the old table until the
// commit. The new base chain is hooked before the commit and drops
// everything until then, which is narrower than any policy, never wider.
func (t *nsTable) write(c *compiled) error {
	inPlace := t.backoff.retry(func() error { return t.writeTable(c, false) }, t.retried)
	if inPlace == nil || classify(inPlace) != classMalformed {
		return inPlace
	}
	if err := t.backoff.retry(func() error { return t.writeTable(c, true) }, t.retried); err != nil {
		return fmt.Errorf("recreate the table (in place: %v): %w", inPlace, err)
	}
	return nil
}

// writeTable installs c in one transaction, in place or, when recreate is
// set, deleting the table first in the same transaction.
func (t *nsTable) writeTable(c *compiled, recreate bool) error {
	var oldSets []*nftables.Set
	var oldChains []*nftables.Chain
	if !recreate {
		conn, err := t.socks.conn(0)
		if err != nil {
			return err
		}
		oldSets, oldChains, err = contents(conn)
		t.socks.release(conn.CloseLasting)
		if err != nil {
			return err
		}
		c.gen = "a"
		for _, s := range oldSets {
			if s.Name == setPeer4+"_a" {
				c.gen = "b"
			}
		}
		if oldSets == nil && oldChains == nil {
			recreate = true // no table: nothing to keep
		}
	}
	// The table, chains, sets, maps and rules are built by the library
	// and recorded; the sets' elements are written into the batch
	// directly (batch.go).
	var msgs []netlink.Message
	conn, err := recorder(&msgs)
	if err != nil {
		return err
	}
	b := newBatch(batchBytes(c.sets()))
	tbl := moatTable()
	conn.AddTable(tbl)
	if recreate {
		// Create, delete and recreate: the delete cannot fail for a
		// missing table, and the new table starts empty.
		conn.DelTable(tbl)
		conn.AddTable(tbl)
		c.gen = "a"
	}
	policy := nftables.ChainPolicyDrop
	ch := conn.AddChain(&nftables.Chain{
		Name:     "input",
		Table:    tbl,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &policy,
	})
	if !recreate {
		// Unbind the old sets and maps from every rule.
		conn.FlushChain(ch)
		for _, o := range oldChains {
			if o.Name != ch.Name {
				conn.FlushChain(o)
			}
		}
	}
	fams := c.families()
	chains := make(map[string]*nftables.Chain)
	for _, f := range fams {
		for _, sh := range f.shards {
			chains[sh.name] = conn.AddChain(&nftables.Chain{Name: sh.name, Table: tbl})
		}
	}
	sets := make(map[string]*nftables.Set)
	tsets := c.tableSets()
	for _, s := range tsets {
		set := newSet(tbl, s.name, s.v4)
		if s.vmap {
			set.IsMap, set.DataType = true, nftables.TypeVerdict
		}
		if err := addSet(conn, set); err != nil {
			return fmt.Errorf("add set %s: %w", s.name, err)
		}
		if s.vmap {
			// A map has a few elements (one range per shard).
			if err := addElements(conn, set, s.v4, jumpElements(s.jumps), false); err != nil {
				return err
			}
		}
		sets[s.name] = set
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	b.record(msgs)
	msgs = msgs[:0]
	for _, s := range tsets {
		if !s.vmap {
			if err := b.elems(s.name, sets[s.name].ID, s.v4, s.spans, false); err != nil {
				return err
			}
		}
	}
	for _, r := range c.rules() {
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: r.exprs(sets)})
	}
	for _, f := range fams {
		for _, sh := range f.shards {
			for _, r := range c.shardRules(f.v4, sh.name) {
				conn.AddRule(&nftables.Rule{Table: tbl, Chain: chains[sh.name], Exprs: r.exprs(sets)})
			}
		}
	}
	// The old maps go before the old chains they jump to.
	for _, o := range oldSets {
		conn.DelSet(o)
	}
	for _, o := range oldChains {
		if o.Name != ch.Name {
			conn.DelChain(o)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	b.record(msgs)
	if err := t.commit.commit(b); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// jumpElements returns the elements of a verdict map: each range's start
// jumps to its chain.
func jumpElements(jumps []jump) []nftables.SetElement {
	var out []nftables.SetElement
	for _, j := range jumps {
		out = append(out, nftables.SetElement{Key: j.span.from.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: j.chain}})
		if end := j.span.to.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// contents lists the sets and chains of the Moat table, nil if there is
// no table.
func contents(conn *nftables.Conn) ([]*nftables.Set, []*nftables.Chain, error) {
	t, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("list table: %w", err)
	}
	sets, err := conn.GetSets(t)
	if err != nil {
		return nil, nil, fmt.Errorf("list sets: %w", err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, fmt.Errorf("list chains: %w", err)
	}
	var mine []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			mine = append(mine, ch)
		}
	}
	if sets == nil {
		sets = []*nftables.Set{}
	}
	return sets, mine, nil
}

// delete removes the table in one transaction; it is not an error if there
// is none.
func (t *nsTable) delete() error {
	var msgs []netlink.Message
	conn, err := recorder(&msgs)
	if err != nil {
		return err
	}
	tbl := moatTable()
	conn.AddTable(tbl) // so that the delete cannot fail for a missing table
	conn.DelTable(tbl)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	return t.backoff.retry(func() error {
		b := newBatch(0)
		b.record(msgs)
		return t.commit.commit(b)
	}, t.retried)
}
