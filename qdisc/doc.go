// Package qdisc impairs a link the way network tests need it: delay with
// jitter, loss (random or in bursts), duplication, corruption, reordering,
// and a rate with a queue limit: what "tc qdisc replace dev X root netem
// delay 50ms loss 1%" and "tc qdisc replace dev X root tbf rate 10mbit"
// do, in pure rtnetlink (RTM_NEWQDISC), on any link of any namespace.
//
//	err := qdisc.Set(ns, "eth0", qdisc.Impairment{Delay: 50 * time.Millisecond, Loss: 1})
//	...
//	err = qdisc.Remove(ns, "eth0") // back to the link's default queueing
//
// A qdisc shapes what a link sends: impair the two ends of a veth pair to
// impair both directions (nat.Link.Impair does that for a connected
// namespace). An Impairment with only Rate (and Limit) is a token bucket
// filter (sch_tbf); anything else is netem (sch_netem), which carries the
// rate itself. Set replaces the link's root qdisc at once, without taking
// the link down: connections through it live on. The qdisc goes with its
// link.
//
// netem's delay distribution is uniform within the jitter, or "normal"
// (the table iproute2 ships as normal.dist, computed here). Values are
// checked before the kernel sees them: a negative duration, a percentage
// outside 0..100, a correlation without what it correlates, reordering
// without delay, a limit without a rate or netem feature give an error
// matching ErrInvalid and change nothing.
//
// The kernel must have the qdisc: sch_netem (CONFIG_NET_SCH_NETEM) for
// netem features, sch_tbf for a rate alone; without it Set fails with an
// error naming the module. Changes need CAP_NET_ADMIN in the namespace.
package qdisc
