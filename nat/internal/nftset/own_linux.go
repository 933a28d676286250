package nftset

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/nftables"
)

// OwnTable checks that the table called nsnet is the library's: it has
// every set of the library's, each with the library's key type, or it is
// ErrForeignTable. (google/nftables does not read a set's comment back,
// or that would be the mark.) A dump racing with another
// process's removal and re-creation of the table can see part of it: only
// a table found wanting three times running is called foreign.
func OwnTable(c *nftables.Conn) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = CheckSets(c); err == nil || !errors.Is(err, ErrForeignTable) {
			return err
		}
	}
	return err
}

// CheckSets is one look of OwnTable's.
func CheckSets(c *nftables.Conn) error {
	got, err := c.GetSets(Table)
	if err != nil {
		return fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	have := map[string]string{}
	for _, s := range got {
		have[s.Name] = s.KeyType.Name
	}
	for _, s := range Sets {
		if have[s.Name] == s.KeyType.Name {
			continue
		}
		if have[SetLinks] == ByName[SetLinks].KeyType.Name && have[s.Name] == "" {
			// An older nsnet's table: its processes' links work on in it,
			// but it lacks what this version's entries need.
			return fmt.Errorf("%w: it was made by an older nsnet (no set %q): close the links of the processes using it (nsnet ls), or run nsnet sweep once they have exited",
				ErrForeignTable, s.Name)
		}
		return fmt.Errorf("%w (it has no nsnet set %q of type %s); remove or rename it", ErrForeignTable, s.Name, s.KeyType.Name)
	}
	return nil
}

// NewestRule is the comment of the rule this version added last to the
// skeleton (see AddSkeleton): a table without it was made by an older
// nsnet, whose rules lack what this version's links rely on. Change it
// with every rule added.
const NewestRule = "nsnet: " + newestRule

const newestRule = "a link's connection to the host: marked with the link's index"

// CheckRules checks that the library's table (see OwnTable) has this
// version's rules, or it is ErrForeignTable saying it was made by an older
// nsnet. Links of this version in such a table would go without the
// checks it lacks (a table is made by the first process with a link on
// the host and used by all others until the last is gone), silently. A
// table that went meanwhile (another process's last Close) is ENOENT, as
// for OwnTable; one found wanting is looked at again, as there.
func CheckRules(c *nftables.Conn) error {
	for attempt := 0; attempt < 3; attempt++ {
		rules, err := c.GetRules(Table, &nftables.Chain{Name: ChainToHost, Table: Table})
		if err != nil && !IsENOENT(err) {
			return fmt.Errorf("read table inet %s: %w", TableName, err)
		}
		for _, r := range rules {
			if bytes.Contains(r.UserData, []byte(NewestRule)) {
				return nil
			}
		}
		if err := CheckSets(c); err != nil {
			return err // gone (ENOENT), or not ours any more
		}
	}
	return fmt.Errorf("%w: it was made by an older nsnet (without the rule %q): close the links of the processes using it (nsnet ls), or run nsnet sweep once they have exited",
		ErrForeignTable, NewestRule)
}
