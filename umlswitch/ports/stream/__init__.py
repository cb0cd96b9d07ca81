"""The stream family: QEMU ``-netdev stream`` / ``-netdev socket,connect=`` clients of a
``--stream`` listener, and ``--stream-connect`` links to a listener of the same framing."""
