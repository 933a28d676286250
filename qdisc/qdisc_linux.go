package qdisc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// From linux/pkt_sched.h (not in x/sys/unix).
const (
	tcHRoot = 0xFFFFFFFF

	tcaNetemCorr      = 1
	tcaNetemDelayDist = 2
	tcaNetemReorder   = 3
	tcaNetemCorrupt   = 4
	tcaNetemLoss      = 5
	tcaNetemRate      = 6
	tcaNetemRate64    = 8
	tcaNetemLatency64 = 10
	tcaNetemJitter64  = 11
	netemLossGE       = 2 // NETEM_LOSS_GE: Gilbert-Elliott

	tcaTbfParms  = 1
	tcaTbfRate64 = 4
	tcaTbfBurst  = 6

	tcLinklayerEthernet = 1
	netemDefaultLimit   = 1000
)

// sysSet applies im (the zero value: removes the impairment) to the link
// of index, or by that name if index is 0, in ns.
func sysSet(ns *netns.Handle, name string, index int, im Impairment) error {
	c, err := nl.Dial(ns)
	if err != nil {
		return nl.NeedPriv(fmt.Errorf("qdisc: %w", err), "CAP_NET_ADMIN in the namespace")
	}
	defer c.Close()
	if index == 0 {
		if index, err = linkIndex(c, name); err != nil {
			return err
		}
	} else {
		name = fmt.Sprintf("link %d", index)
	}
	if im.IsZero() {
		err = c.Exec(nl.Request{Type: unix.RTM_DELQDISC, Data: tcmsg(index)})
		if errors.Is(err, unix.ENOENT) {
			return nil // the default qdisc: nothing to take away
		}
		return nl.NeedPriv(wrap(err, "qdisc: remove on %s", name), "CAP_NET_ADMIN in the namespace")
	}
	kind, opts := encode(im)
	err = c.Exec(newQdisc(index, kind, opts))
	if errors.Is(err, unix.ENOENT) {
		// The kernel answers ENOENT for a qdisc kind it has no module for.
		err = fmt.Errorf("%w (the kernel lacks sch_%s: CONFIG_NET_SCH_%s)", err, kind, strings.ToUpper(kind))
	}
	return nl.NeedPriv(wrap(err, "qdisc: set %s on %s", im, name), "CAP_NET_ADMIN in the namespace")
}

// wrap is err with what was being done, or nil.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), err)
}

func linkIndex(c *nl.Conn, name string) (int, error) {
	if err := nl.CheckIfName(name); err != nil {
		return 0, fmt.Errorf("qdisc: %w", err)
	}
	msgs, err := c.Query(nl.GetLinkByName(name))
	if err != nil {
		return 0, fmt.Errorf("qdisc: link %s: %w", name, err)
	}
	l, err := nl.DecodeLink(msgs[0].Data)
	if err != nil {
		return 0, err
	}
	return int(l.Index), nil
}

// tcmsg is struct tcmsg for the root qdisc of link index (handle 0: the
// kernel picks one).
func tcmsg(index int) []byte {
	b := make([]byte, 20)
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(index)))
	binary.NativeEndian.PutUint32(b[12:], tcHRoot)
	return b
}

// newQdisc replaces link index's root qdisc with one of kind and options,
// or changes the one there if it is of that kind already (its queue
// kept): NLM_F_CREATE|NLM_F_REPLACE without a handle, as "tc qdisc
// replace dev X root KIND ...".
func newQdisc(index int, kind string, opts []byte) nl.Request {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, kind)
	ae.Bytes(unix.TCA_OPTIONS, opts)
	attrs, _ := ae.Encode() // (strings and bytes cannot fail to encode)
	return nl.Request{Type: unix.RTM_NEWQDISC, Flags: netlink.Create | netlink.Replace, Data: append(tcmsg(index), attrs...)}
}

// prob scales a percentage to netem's u32 probabilities.
func prob(percent float64) uint32 {
	return uint32(math.Round(percent / 100 * math.MaxUint32))
}

// encode returns the qdisc kind and its TCA_OPTIONS for im.
func encode(im Impairment) (kind string, opts []byte) {
	if !im.netem() {
		return "tbf", tbfOptions(im)
	}
	return "netem", netemOptions(im)
}

// tbfOptions: TCA_TBF_PARMS (struct tc_tbf_qopt: the rate's tc_ratespec,
// no peak rate, the queue limit in bytes), the rate in TCA_TBF_RATE64 past
// 32 bits, the bucket in TCA_TBF_BURST (bytes, so no rate table is
// needed: the ratespec says Ethernet).
func tbfOptions(im Impairment) []byte {
	bytesPerSec := im.Rate / 8
	burst := max(bytesPerSec/100, 16*1514) // 10 ms at the rate, and at least 16 full frames (GSO)
	limit := uint64(im.Limit) * 1514
	if im.Limit == 0 {
		limit = bytesPerSec/20 + burst // 50 ms at the rate (tc's "latency 50ms")
	}
	parms := make([]byte, 36)
	parms[1] = tcLinklayerEthernet
	binary.NativeEndian.PutUint32(parms[8:], uint32(min(bytesPerSec, math.MaxUint32)))
	binary.NativeEndian.PutUint32(parms[24:], uint32(min(limit, math.MaxUint32)))
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(tcaTbfParms, parms)
	if bytesPerSec > math.MaxUint32 {
		ae.Uint64(tcaTbfRate64, bytesPerSec)
	}
	ae.Uint32(tcaTbfBurst, uint32(min(burst, math.MaxUint32)))
	b, _ := ae.Encode()
	return b
}

// netemOptions: struct tc_netem_qopt (latency and jitter left 0 there, in
// ticks; given in nanoseconds by TCA_NETEM_LATENCY64 and _JITTER64), then
// netem's attributes, not nested: netem's TCA_OPTIONS is the struct
// followed by them.
func netemOptions(im Impairment) []byte {
	qopt := make([]byte, 24) // latency, limit, loss, gap, duplicate, jitter
	limit := uint32(netemDefaultLimit)
	if im.Limit > 0 {
		limit = uint32(im.Limit)
	}
	binary.NativeEndian.PutUint32(qopt[4:], limit)
	if im.LossBurst == 0 {
		binary.NativeEndian.PutUint32(qopt[8:], prob(im.Loss))
	}
	binary.NativeEndian.PutUint32(qopt[16:], prob(im.Duplicate))
	u32s := func(v ...uint32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.NativeEndian.PutUint32(b[4*i:], x)
		}
		return b
	}
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(tcaNetemCorr, u32s(prob(im.DelayCorrelation), prob(im.LossCorrelation), prob(im.DuplicateCorrelation)))
	if im.Distribution == "normal" {
		ae.Bytes(tcaNetemDelayDist, normalTable())
	}
	if im.Reorder > 0 {
		ae.Bytes(tcaNetemReorder, u32s(prob(im.Reorder), prob(im.ReorderCorrelation)))
	}
	if im.Corrupt > 0 {
		ae.Bytes(tcaNetemCorrupt, u32s(prob(im.Corrupt), prob(im.CorruptCorrelation)))
	}
	if im.LossBurst > 0 {
		// Gilbert-Elliott: every packet lost in the bad state, none in
		// the good one; a bad run lasts LossBurst on average (r = 1/B),
		// and the bad state's share of time is Loss (p = L r / (1 - L)).
		l, r := im.Loss/100, 1/im.LossBurst
		p := l * r / (1 - l)
		ae.Nested(tcaNetemLoss, func(nae *netlink.AttributeEncoder) error {
			nae.Bytes(netemLossGE, u32s(prob(100*min(p, 1)), prob(100*r), 0, 0))
			return nil
		})
	}
	if im.Rate > 0 {
		bytesPerSec := im.Rate / 8
		ae.Bytes(tcaNetemRate, u32s(uint32(min(bytesPerSec, math.MaxUint32)), 0, 0, 0))
		if bytesPerSec > math.MaxUint32 {
			ae.Uint64(tcaNetemRate64, bytesPerSec)
		}
	}
	if im.Delay > 0 {
		ae.Int64(tcaNetemLatency64, int64(im.Delay))
	}
	if im.Jitter > 0 {
		ae.Int64(tcaNetemJitter64, int64(im.Jitter))
	}
	attrs, _ := ae.Encode()
	return append(qopt, attrs...)
}

// normalTable is iproute2's normal.dist: 4,096 points of the inverse
// normal distribution, scaled by NETEM_DIST_SCALE (8,192), as its
// maketable-like generator (netem/normal.c) computes them.
func normalTable() []byte {
	const size, scale = 16384, 8192
	table := make([]float64, size+1)
	for x := -10.0; x < 10.05; x += .00005 { // as normal.c, step by step
		n := int(math.RoundToEven(size * (0.5 + 0.5*math.Erf(x/math.Sqrt2))))
		table[n] = x
	}
	out := make([]byte, 0, size/4*2)
	for i := 0; i < size; i += 4 {
		v := math.RoundToEven(table[i] * scale)
		v = max(min(v, math.MaxInt16), math.MinInt16)
		out = binary.NativeEndian.AppendUint16(out, uint16(int16(v)))
	}
	return out
}
