package nat

import (
	"errors"
	"fmt"
)

// sysCloseAll is CloseAll on Linux: the links of each host state go
// through closeSteps together (one delete request, one transaction for
// their entries).
func sysCloseAll(links ...*Link) error {
	byHost := map[*hostState][]*owned{}
	var order []*hostState
	seen := map[*Link]bool{}
	var errs []error
	for _, l := range links {
		if l == nil || seen[l] {
			continue
		}
		seen[l] = true
		if l.owned == nil || l.hs == nil || l.persistent {
			errs = append(errs, l.Close()) // Close says why, or removes it
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			continue
		}
		l.closed = true
		if byHost[l.hs] == nil {
			order = append(order, l.hs)
		}
		byHost[l.hs] = append(byHost[l.hs], l.owned)
	}
	for _, hs := range order {
		group := byHost[hs]
		err := closeSteps(hs, group, true)
		if err != nil {
			err = fmt.Errorf("nat: close %d links: %w", len(group), err)
			errs = append(errs, err)
		}
		for _, o := range group {
			o.err = err
			o.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}
