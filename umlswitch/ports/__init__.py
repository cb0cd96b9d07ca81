"""Port kinds, grouped by family; each turns OS objects into "frames in, frames out".

``base.py`` is the port interface and its egress backlog, ``vectorio.py`` the batch system calls.
The families: ``unix/`` (control socket, client data sockets, peer check), ``udp/`` (mcast and
ucast peers), ``overlay/`` (VXLAN and vxvde). The tap port lives in ``umlswitch/tap/``.
"""
