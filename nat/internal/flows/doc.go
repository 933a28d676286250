// Package flows forgets the host's connection tracking entries of what
// nsnet undoes: a closed link's connections (by the mark from_link gives
// them), and the connections to unpublished ports, whoever made them. An
// entry left behind would keep steering a flow (a UDP one as long as
// packets come) to an address that the next holder of the prefix gets.
package flows
