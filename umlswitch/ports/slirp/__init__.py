"""The slirp uplink: a libslirp NAT router (``vde_plug slirp://``) as a child of the switch."""
