"""The management console: vde_switch's text protocol on a unix socket, plus ``ctl`` and ``top``.

* ``protocol``: the wire format, pure (lines in, replies out; replies in, parsed replies out).
* ``views``: JSON documents of the live switch, and their text rendering.
* ``commands``: the command table and the dispatcher.
* ``server``: the socket I/O of the daemon's management socket.
* ``client``: a blocking session and the ``umlswitch ctl`` command.
* ``top``: ``umlswitch top``, a live table of ports and rates (needs ``rich``).
"""
