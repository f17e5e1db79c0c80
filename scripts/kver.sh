#!/bin/sh
# Print the newest Debian kernel version that has both /boot/vmlinuz-VER and
# /usr/src/linux-headers-VER: the kernel the QEMU guest boots and the module
# is built for.  Never the host's running kernel.
for img in $(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V -r); do
	ver=${img#/boot/vmlinuz-}
	if [ -d "/usr/src/linux-headers-$ver" ]; then
		echo "$ver"
		exit 0
	fi
done
echo "none"
