// Package table is one process's use of the library's nftables table in
// one host network namespace: its idle sockets (netlink, nftables and
// conntrack; opening one costs more than the request it serves), whether
// the table is known to be there, and the transactions on its sets that
// need it: a link's entries added exclusively (a refusal explained: which
// claim, port or link is in the way), entries removed, the table made
// once for many concurrent Connects and dropped when no process has a
// link in it.
//
// # Prefixes
//
// The claims map holds the prefix of every live Link and Rules, mapped to
// its host end's index, and every prefix containing one of them (its
// covers, down to /8), mapped to 0. A link's entries are added in one
// transaction: its own claim with NLM_F_EXCL (refused if the prefix is
// claimed or covers a claim: one inside it), its covers without (refused
// only where a cover is claimed itself, as the data differ: it is inside
// another claim). So of two processes connecting overlapping prefixes at
// the same moment, exactly one succeeds. Covers are shared: a link's
// removal (Close, a failed Connect, Remove) also removes those of its
// covers no other claim needs (Host.DropCovers: a cover is needed exactly
// when one of the siblings between it and the prefix is in the map), with
// a transaction checked against the generation they were read at, so that
// a claim added meanwhile keeps its own. One left behind (a crash, a
// ruleset that kept changing) is removed the same way when it is in the
// way of a new claim, or by Sweep. (A hash map: an interval set did the
// same with one entry per prefix, but each commit cost the kernel more the
// more prefixes it held.)
//
// # The table
//
// It is made with all its sets and chains in one transaction; a table of
// that name whose sets do not carry the library's comments was not made by
// nsnet and is never changed (ErrForeignTable). It is removed only when
// its links set is empty, by a transaction that carries the generation
// read before that check (NFNL_BATCH_GENID): if anything committed in
// between, the kernel refuses it and the check runs again.
//
// A [Host] has two mutexes: mu, never held across I/O, guards the idle
// sockets and the table's state, a leaf in nat's lock order; ownMu, taken
// just before it, makes the DNS relays' conntrack marks one at a time (see
// FlowOwner).
package table
