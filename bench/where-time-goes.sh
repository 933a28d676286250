#!/usr/bin/env bash
# Where a veth delete spends its time: records the scheduler switches of
# "ip link del" (in private network and mount namespaces of its own) with
# kernel stacks, and prints how long it slept and where. Needs perf
# (Debian: linux-perf) and root.
#
#   sudo bash bench/where-time-goes.sh
set -euo pipefail
if [ "${NSNET_WTG_INSIDE:-}" != 1 ]; then
  exec unshare -m -n env NSNET_WTG_INSIDE=1 bash "$0" "$@"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ip link add h1 type veth peer name p1
ip link set h1 up
ip link set p1 up
perf record -q -a -o "$tmp/perf.data" -e sched:sched_switch -g -- ip link del h1 >/dev/null 2>&1
perf script -i "$tmp/perf.data" -F comm,tid,time,trace,ip,sym 2>/dev/null >"$tmp/perf.txt"
python3 - "$tmp/perf.txt" <<'PY'
import re, sys
out = None
for blk in open(sys.argv[1]).read().split('\n\n'):
    lines = blk.strip().split('\n')
    m = re.search(r'(\d+\.\d+): +prev_comm=(\S+).*next_comm=(\S+)', lines[0])
    if not m:
        continue
    t = float(m.group(1))
    if m.group(2) == 'ip':
        fns = [l.split()[1] for l in lines[1:8]]
        out = (t, [f for f in fns if not f.startswith(('__schedule', 'schedule'))][:4])
    elif m.group(3) == 'ip' and out:
        if t - out[0] > 0.0001:
            print('ip link del slept %.2f ms in %s' % ((t - out[0]) * 1000, ' <- '.join(out[1])))
        out = None
PY
