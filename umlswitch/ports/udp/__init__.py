"""The UDP family of ports: UML mcast/ucast and QEMU socket/dgram peers, one frame per datagram."""
