#!/bin/sh
# Boot a small QEMU guest on a running umlswitch, run a command in it, and power it off.
#
#   examples/qemu-guest.sh IP NETDEV [COMMAND...]
#
# The guest has one virtio-net NIC on QEMU's `-netdev NETDEV` (its id must be n0; the NIC's MAC
# is 52:54:00:12:34:XX, XX the last number of IP), eth0 addressed IP/24. It runs COMMAND (a shell
# command line, busybox's tools) and powers off; without COMMAND it gives a shell on this
# terminal (`poweroff -f` ends it). Its exit status is the command's. No disk image and no
# download: the kernel is Debian's cloud kernel (linux-image-cloud-amd64, virtio-net as
# modules), the root an initramfs built here from busybox-static and the kernel's virtio modules. QEMU runs under TCG (-accel tcg), as any user.
# The script prints the QEMU command line it runs on stderr. Everything it writes is in a
# private directory (mktemp -d), removed at the end.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 IP NETDEV [COMMAND...]" >&2; exit 2; }
ip=$1 netdev=$2
shift 2
kernel=${QEMU_KERNEL:-$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] || { echo "$0: no /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64" >&2; exit 1; }
modules=/lib/modules/${kernel#*/vmlinuz-}/kernel
busybox=/bin/busybox
$busybox 2>/dev/null | grep -q cpio || { echo "$0: no $busybox: apt-get install busybox-static" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "$0: apt-get install qemu-system-x86" >&2; exit 1; }
commands=$#
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

root=$dir/root
mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
# In load order: each needs only those before it (modinfo -F depends).
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
for m in $mods; do
    found=$(find "$modules" -name "$m.ko" | head -n 1)
    [ -n "$found" ] || { echo "$0: no $m.ko under $modules" >&2; exit 1; }
    cp "$found" "$root/modules/"
done
{
    echo '#!/bin/busybox sh'
    echo '/bin/busybox --install -s /bin'
    echo 'export PATH=/bin HOME=/tmp'
    echo 'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev'
    echo "for m in $mods; do insmod /modules/\$m.ko; done"
    echo "ip link set lo up; ip addr add $ip/24 dev eth0; ip link set eth0 up"
    if [ $# -gt 0 ]; then
        echo "( $* )"
        echo 'echo "qemu-guest: exit status $?"'
    else
        echo 'echo "guest '"$ip"' on eth0; poweroff -f ends it"; setsid cttyhack sh'
    fi
    echo 'poweroff -f'
} > "$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | $busybox cpio -o -H newc 2>/dev/null) > "$dir/initramfs.cpio"

mac=$(printf '52:54:00:12:34:%02x' "${ip##*.}")
set -- qemu-system-x86_64 -accel tcg -m 192M -nodefaults -display none -no-reboot \
    -serial stdio -kernel "$kernel" -initrd "$dir/initramfs.cpio" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1" \
    -netdev "$netdev" -device "virtio-net-pci,netdev=n0,mac=$mac"
echo "+ $*" >&2
if [ "$commands" = 0 ]; then  # a shell on this terminal
    "$@"
    exit
fi
# The script's exit status is the command's, read from the guest's console.
"$@" | tee "$dir/console"
status=$(sed -n 's/^qemu-guest: exit status \([0-9]*\).*/\1/p' "$dir/console" | tail -n 1)
exit "${status:-1}"
