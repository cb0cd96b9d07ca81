"""The stream family: QEMU ``-netdev stream`` / ``-netdev socket,connect=`` clients."""
