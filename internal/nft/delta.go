package nft

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// The delta between the policy the kernel holds and the wanted one: the
// set elements to delete and to add, in one transaction.

// errUncached means the delta was applied and verified by reading the
// whole table back, but is not known to be generation-exact.
var errUncached = errors.New("applied; ruleset generation unknown")

// errStale means the ruleset is not the one the Firewall last verified.
var errStale = errors.New("ruleset changed since the last apply")

// errReshard means the new ranges do not fit the old shards.
var errReshard = errors.New("shards change")

// delta is how the sets change from one compiled policy to the next.
type delta struct {
	sets []setDelta // the sets that change, in table order
	// elems is the number of elements deleted and added, in all.
	elems int
	// bytes is the encoded size of those elements.
	bytes int
}

// setDelta is the change of one set: the ranges it loses and gains.
type setDelta struct {
	set      string
	v4       bool
	del, add []span
}

// deltaOf returns the change of the sets from old to c, which must have
// the same shards (the same cuts) and generation.
func deltaOf(old, c *compiled) delta {
	var d delta
	oldSets := old.sets()
	for i, s := range c.sets() {
		del, add := diff(oldSets[i].spans, s.spans)
		if len(del)+len(add) == 0 {
			continue
		}
		n := elemCountOf(del) + elemCountOf(add)
		d.elems += n
		d.bytes += n * elemBytes(s.v4)
		d.sets = append(d.sets, setDelta{s.name, s.v4, del, add})
	}
	return d
}

// elemCountOf returns how many interval elements spans encode to.
func elemCountOf(spans []span) int {
	n := 0
	for _, s := range spans {
		n += elemCount(s)
	}
	return n
}

// batch returns the transaction that applies d, nil if d is empty.
// Deletions go first: a range that grows or shrinks is deleted and added
// again, and its start key may be the same.
func (d delta) batch() (*batch, error) {
	if len(d.sets) == 0 {
		return nil, nil
	}
	b := newBatch(d.bytes + 64<<10)
	for _, s := range d.sets {
		if err := b.elems(s.set, 0, s.v4, s.del, true); err != nil {
			return nil, err
		}
	}
	for _, s := range d.sets {
		if err := b.elems(s.set, 0, s.v4, s.add, false); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// applyDelta changes the sets from old, held by the kernel at generation
// gen, to c in one transaction, sending only the ranges that differ, and
// verifies the result. It returns the new generation. A transient failure
// is retried as long as the ruleset is still at gen (else errStale: a lost
// ack may hide a committed transaction).
func (t *nsTable) applyDelta(k *kernel, gen uint32, old, c *compiled) (uint32, error) {
	c.gen = old.gen
	if !slices.Equal(old.cut4, c.cut4) || !slices.Equal(old.cut6, c.cut6) {
		return 0, errReshard
	}
	d := deltaOf(old, c)
	b, err := d.batch()
	if err != nil {
		return 0, err
	}
	err = t.backoff.retry(func() error {
		if g, err := k.gen(); err != nil {
			return err
		} else if g != gen {
			return errStale
		}
		if b == nil {
			return nil
		}
		if err := t.commit.commit(b); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}, t.retried)
	if err != nil {
		return 0, err
	}
	if b == nil {
		return gen, nil
	}
	after, err := k.gen()
	if err != nil || after != gen+1 || d.elems > maxSpotChecks {
		// Another transaction came in between, or the change is large:
		// read everything back.
		if err := t.verify(c); err != nil {
			return 0, err
		}
		return 0, errUncached
	}
	if err := t.spotCheck(k, c, d); err != nil {
		return 0, err
	}
	return after, nil
}

func elemID(e nftables.SetElement) string {
	if e.IntervalEnd {
		return "e" + string(e.Key)
	}
	return "s" + string(e.Key)
}

// diff returns the ranges of old not in new and of new not in old. Both
// are sorted and non-overlapping (mergeSpans), so one linear merge finds
// them without allocating for the common ranges.
func diff(old, new []span) (del, add []span) {
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		o, n := old[i], new[j]
		if o == n {
			i++
			j++
			continue
		}
		c := o.from.Compare(n.from)
		if c == 0 {
			c = o.to.Compare(n.to)
		}
		if c < 0 {
			del = append(del, o)
			i++
		} else {
			add = append(add, n)
			j++
		}
	}
	del = append(del, old[i:]...)
	add = append(add, new[j:]...)
	return del, add
}
