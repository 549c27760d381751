package localcloud

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// SetLinks cuts (up false) or restores (up true) every link of namespace
// ns: the bridge ports of its interfaces, in every network's namespace,
// go down or up. A cut namespace keeps its addresses and routes (its own
// ends stay up, without carrier), so restoring it needs nothing else. It
// reports how many ports it changed; a namespace with none is not an
// error (it may be gone).
func (c *Cloud) SetLinks(ctx context.Context, ns string, up bool) (int, error) {
	unlock, err := c.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	nss, err := c.namespaces()
	if err != nil {
		return 0, err
	}
	alias := "moat:port=" + ns + "/"
	n := 0
	var errs []error
	for _, bns := range nss {
		err := c.withNetlink(bns, func(h *netlink.Handle) error {
			links, err := h.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if !strings.HasPrefix(l.Attrs().Alias, alias) {
					continue
				}
				set := h.LinkSetDown
				if up {
					set = h.LinkSetUp
				}
				if err := set(l); err != nil {
					return fmt.Errorf("set port %s of %s: %w", l.Attrs().Name, ns, err)
				}
				if up {
					if err := waitOperUp(h, l.Attrs().Name); err != nil {
						return err
					}
				}
				n++
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
