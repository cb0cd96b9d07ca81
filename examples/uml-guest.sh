#!/bin/sh
# Boot a User-Mode-Linux guest on a running umlswitch, run a command in it, and halt it.
#
#   examples/uml-guest.sh N [COMMAND...]
#
# Guest N (1-254) gets MAC 02:00:00:00:00:NN and address 10.0.0.N/24 on eth0=daemon, attached
# to the switch's control socket $UMLSWITCH_CTL (default /tmp/uml.ctl), or on the transport
# $UML_ETH0 when set (UML's eth0= value: `mcast`, `vde,vde:///run/umlswitch`). It runs COMMAND
# (a shell command line) and halts; without COMMAND it gives a shell on this terminal (`halt -f`
# ends it). Its exit status is the command's; SIGTERM (kill) halts the guest at once.
# The guest's root is the host's own / through hostfs, read-only: no disk image is needed, and
# it needs root and Debian's user-mode-linux package. Its console shows the command's output.
#
# Debian's UML 6.1 cannot restore its processes' registers on CPUs with AVX-512 or AMX; on such
# a host this builds examples/uml_xstate_shim.c (with cc: Debian package gcc) and preloads it.
# Everything the script writes is in a private directory (mktemp -d), removed at the end.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 N [COMMAND...]" >&2; exit 2; }
n=$1
shift
case $n in *[!0-9]* | '') echo "$0: N must be a number from 1 to 254, not '$n'" >&2; exit 2 ;; esac
[ "$n" -ge 1 ] && [ "$n" -le 254 ] || { echo "$0: N must be from 1 to 254" >&2; exit 2; }
ctl=${UMLSWITCH_CTL:-/tmp/uml.ctl}
linux=${UML_LINUX:-/usr/bin/linux}
[ -x "$linux" ] || { echo "$0: no $linux: apt-get install user-mode-linux" >&2; exit 1; }
[ -n "${UML_ETH0:-}" ] || [ -S "$ctl" ] || { echo "$0: no switch on $ctl: start one with: umlswitch -unix $ctl" >&2; exit 1; }
mac=$(printf '02:00:00:00:00:%02x' "$n")
here=$(cd "$(dirname "$0")" && pwd)
commands=$#
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

preload=
if grep -qw -e avx512f -e amx_tile /proc/cpuinfo; then
    cc -O2 -shared -fPIC -o "$dir/xstate.so" "$here/uml_xstate_shim.c" -ldl ||
        { echo "$0: building the FP-state shim needs cc: apt-get install gcc" >&2; exit 1; }
    preload=$dir/xstate.so
fi

# The guest's init: the root is read-only, so it writes nothing (mount -n, halt -d).
{
    echo '#!/bin/sh'
    echo 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'mount -n -t proc proc /proc'
    echo 'ip link set lo up'
    echo "ip link set eth0 address $mac && ip addr add 10.0.0.$n/24 dev eth0 && ip link set eth0 up"
    if [ $# -gt 0 ]; then
        echo "( $* )"
        echo 'echo "uml-guest: exit status $?"'
    else
        echo 'echo "guest '"$n"': 10.0.0.'"$n"' on eth0; halt -f ends it"; exec /bin/sh'
    fi
    # halt is systemd-sysv's (absent from minimal systems): else the kernel's own power-off
    echo 'halt -f -d 2>/dev/null || { echo o > /proc/sysrq-trigger; sleep 10; }'
} > "$dir/init"
chmod 755 "$dir/init"

eth0=${UML_ETH0:-daemon,$mac,unix,$ctl}
cd "$dir"
# ubd0=/dev/null: the guest has no block device (without it UML looks for ./root_fs and says
# "Failed to initialize ubd device 0"). umid and uml_dir keep UML's pid file in $dir.
set -- "$linux" mem=64M root=/dev/root rootfstype=hostfs rootflags=/ ro quiet \
    init="$dir/init" "eth0=$eth0" con=null con0=fd:0,fd:1 \
    umid=guest$n uml_dir="$dir" ubd0=/dev/null
if [ "$commands" = 0 ]; then  # a shell on this terminal
    LD_PRELOAD=$preload "$@"
    exit
fi
# UML runs in a session of its own, so that killing this script (SIGTERM, Ctrl-C) takes the
# guest and its helper processes down with it. Its console goes through a FIFO to this terminal
# and to a file, from which the script's exit status is the command's.
mkfifo console
LD_PRELOAD=$preload setsid "$@" < /dev/null > console 2>&1 &
uml=$!
trap 'kill -9 "-$uml" 2>/dev/null; exit 143' TERM INT
tee console.log < console &
wait "$uml" || true
wait
status=$(sed -n 's/^uml-guest: exit status \([0-9]*\).*/\1/p' console.log | tail -n 1)
exit "${status:-1}"
