package qdisc

import (
	"errors"
	"fmt"
	"time"

	"github.com/nsnet/nsnet/netns"
)

// ErrInvalid is matched by the error for an Impairment that cannot be
// applied.
var ErrInvalid = errors.New("invalid impairment")

// Impairment is what a link does to the packets it sends. Percentages are
// 0 to 100; a correlation is how much each random decision depends on the
// previous one (percent). The zero value impairs nothing: Set with it is
// Remove.
type Impairment struct {
	Delay            time.Duration // added to every packet
	Jitter           time.Duration // the delay varies by up to this much either way
	DelayCorrelation float64
	// Distribution of the delay within the jitter: "" (uniform) or
	// "normal".
	Distribution string

	Loss            float64 // packets dropped at random, percent
	LossCorrelation float64
	// LossBurst, if not zero, makes losses come in bursts of this mean
	// length (packets), with Loss the share of packets lost overall (a
	// Gilbert-Elliott model of two states; LossCorrelation is then unused).
	LossBurst float64

	Duplicate            float64 // packets sent twice, percent
	DuplicateCorrelation float64
	Corrupt              float64 // packets with one bit flipped, percent
	CorruptCorrelation   float64
	// Reorder sends this share of packets at once, ahead of the delayed
	// others (needs Delay).
	Reorder            float64
	ReorderCorrelation float64

	Rate  uint64 // bits per second; 0: unlimited
	Limit int    // packets the queue holds (0: netem's 1,000, or 50 ms at Rate); more are dropped
}

// IsZero reports whether im impairs nothing.
func (im Impairment) IsZero() bool { return im == Impairment{} }

// netem reports whether im needs netem (anything beyond a rate).
func (im Impairment) netem() bool {
	rate := Impairment{Rate: im.Rate, Limit: im.Limit}
	return im != rate
}

// Validate reports what is wrong with im (an error matching ErrInvalid),
// or nil.
func (im Impairment) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("qdisc: %w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Delay", im.Delay}, {"Jitter", im.Jitter}} {
		if d.v < 0 {
			return bad("%s %v is negative", d.name, d.v)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"DelayCorrelation", im.DelayCorrelation}, {"Loss", im.Loss}, {"LossCorrelation", im.LossCorrelation},
		{"Duplicate", im.Duplicate}, {"DuplicateCorrelation", im.DuplicateCorrelation}, {"Corrupt", im.Corrupt},
		{"CorruptCorrelation", im.CorruptCorrelation}, {"Reorder", im.Reorder}, {"ReorderCorrelation", im.ReorderCorrelation}} {
		if !(p.v >= 0 && p.v <= 100) { // (NaN too)
			return bad("%s %v%% is not a percentage (0 to 100)", p.name, p.v)
		}
	}
	switch {
	case im.Jitter > 0 && im.Delay == 0:
		return bad("Jitter %v without Delay", im.Jitter)
	case im.Jitter > im.Delay:
		return bad("Jitter %v larger than Delay %v (a packet cannot leave before it was sent)", im.Jitter, im.Delay)
	case im.DelayCorrelation > 0 && im.Jitter == 0:
		return bad("DelayCorrelation without Jitter")
	case im.Distribution != "" && im.Distribution != "normal":
		return bad("Distribution %q: \"\" (uniform) or \"normal\"", im.Distribution)
	case im.Distribution != "" && im.Jitter == 0:
		return bad("Distribution %q without Jitter", im.Distribution)
	case im.LossCorrelation > 0 && im.Loss == 0:
		return bad("LossCorrelation without Loss")
	case im.LossBurst != 0 && (im.LossBurst < 1 || im.Loss == 0 || im.Loss == 100):
		return bad("LossBurst %v: a mean burst of 1 packet or more, with Loss between 0 and 100%%", im.LossBurst)
	case im.DuplicateCorrelation > 0 && im.Duplicate == 0:
		return bad("DuplicateCorrelation without Duplicate")
	case im.CorruptCorrelation > 0 && im.Corrupt == 0:
		return bad("CorruptCorrelation without Corrupt")
	case im.ReorderCorrelation > 0 && im.Reorder == 0:
		return bad("ReorderCorrelation without Reorder")
	case im.Reorder > 0 && im.Delay == 0:
		return bad("Reorder without Delay (packets are reordered by sending some ahead of the delayed others)")
	case im.Limit < 0:
		return bad("Limit %d is negative", im.Limit)
	case im.Limit > 0 && !im.netem() && im.Rate == 0:
		return bad("Limit without Rate or a netem feature: a queue that nothing holds back")
	case im.Rate > 0 && im.Rate < 8:
		return bad("Rate %d bit/s is below one byte per second", im.Rate)
	}
	return nil
}

// String describes im as tc would ("delay 50ms 5ms loss 1% rate 10Mbit").
func (im Impairment) String() string {
	if im.IsZero() {
		return "none"
	}
	var s string
	add := func(format string, a ...any) { s += " " + fmt.Sprintf(format, a...) }
	if im.Delay > 0 {
		add("delay %v", im.Delay)
		if im.Jitter > 0 {
			add("%v", im.Jitter)
			if im.DelayCorrelation > 0 {
				add("%g%%", im.DelayCorrelation)
			}
			if im.Distribution != "" {
				add("distribution %s", im.Distribution)
			}
		}
	}
	pct := func(name string, v, corr float64) {
		if v > 0 {
			add("%s %g%%", name, v)
			if corr > 0 {
				add("%g%%", corr)
			}
		}
	}
	pct("loss", im.Loss, im.LossCorrelation)
	if im.LossBurst > 0 {
		add("bursts of %g", im.LossBurst)
	}
	pct("duplicate", im.Duplicate, im.DuplicateCorrelation)
	pct("corrupt", im.Corrupt, im.CorruptCorrelation)
	pct("reorder", im.Reorder, im.ReorderCorrelation)
	if im.Rate > 0 {
		add("rate %s", rateString(im.Rate))
	}
	if im.Limit > 0 {
		add("limit %d", im.Limit)
	}
	return s[1:]
}

func rateString(bits uint64) string {
	switch {
	case bits >= 1e9 && bits%1e9 == 0:
		return fmt.Sprintf("%dGbit", bits/1e9)
	case bits >= 1e6 && bits%1e6 == 0:
		return fmt.Sprintf("%dMbit", bits/1e6)
	case bits >= 1e3 && bits%1e3 == 0:
		return fmt.Sprintf("%dKbit", bits/1e3)
	}
	return fmt.Sprintf("%dbit", bits)
}

// Set applies im to what the link called name in ns (nil: the current
// namespace) sends, replacing its root qdisc; the zero Impairment is
// Remove. Bad values change nothing.
func Set(ns *netns.Handle, name string, im Impairment) error {
	if err := im.Validate(); err != nil {
		return err
	}
	return sysSet(ns, name, 0, im)
}

// SetPair is Set on both ends of a pair, by interface index (identity, not
// names: a renamed end is still found): a's index ai, b's bi. Both are
// checked before either is set.
func SetPair(a *netns.Handle, ai int, ima Impairment, b *netns.Handle, bi int, imb Impairment) error {
	if err := errors.Join(ima.Validate(), imb.Validate()); err != nil {
		return err
	}
	if err := sysSet(a, "", ai, ima); err != nil {
		return err
	}
	return sysSet(b, "", bi, imb)
}

// Remove takes the link's impairment away: its root qdisc goes back to
// the kernel's default. A link without one is no error.
func Remove(ns *netns.Handle, name string) error { return sysSet(ns, name, 0, Impairment{}) }
