// Package nftset is nsnet's nftables schema and the transactions that
// change it: the table inet nsnet with its sets, maps, chains and rules
// (AddSkeleton), a link's entries in the sets (Entries, PortMap), the keys
// they are stored under, and the batches that add and remove entries
// (Batch). It owns no state: what a process holds is nat's record, and the
// kernel's copy is the table.
//
// # The schema
//
// Per-link state lives in sets and maps keyed by interface index, so the
// rules (36 in 5 base chains) and the work every packet does stay the same
// however many links there are; see AddSkeleton for the ruleset as nft
// lists it. The table's schema is a contract between processes (of this
// version and others): sets are never renamed or retyped, and a table of
// that name without them is not the library's (see nat.ErrForeignTable);
// one without this version's newest rule (NewestRule) was made by an older
// nsnet, and a process of this version does not connect links in it.
//
// # Transactions
//
// Entries are added and removed with transactions built here rather than
// with google/nftables, which cannot send NLM_F_EXCL on new entries,
// NFT_MSG_DESTROYSETELEM, entries spread over several messages, or
// NFNL_BATCH_GENID (see Batch).
package nftset

// TableName is the library's nftables table (family inet).
const TableName = "nsnet"
