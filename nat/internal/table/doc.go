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
// the same moment, exactly one succeeds. Covers are shared and stay after
// Close; one that no claim needs any more is removed, with a
// generation-checked transaction, when it is in the way of a new claim or
// by Sweep. (A hash map: an interval set did the same with one entry per
// prefix, but each commit cost the kernel more the more prefixes it held.)
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
// A [Host] has one mutex, mu, never held across I/O: it guards the idle
// sockets and the table's state. It is a leaf in nat's lock order.
package table
