"""Tap ports: connect the switch to the host's network stack through a Linux tap device.

``ifreq`` is the pure part (the ``struct ifreq`` packing for TUNSETIFF, the flag constants and the
kernel's rules for interface names); ``port`` opens the tap through ``/dev/net/tun`` at start-up,
turning every failure into one clear line, and runs it as a port like any other (``tap:DEV``).
"""
