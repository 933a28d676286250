// Package nftgolden records the nftables messages a google/nftables Conn
// sends, as text, and compares them with golden files in testdata: the
// byte-for-byte tests of nsnet's rules (as google/nftables verifies its own
// expressions against what nft sends). For tests only; no kernel and no
// privilege are involved. Linux only, as google/nftables is.
package nftgolden
