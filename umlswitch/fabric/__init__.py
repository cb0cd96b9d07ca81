"""The pure forwarding core: frame checks, the MAC table and the hub/switch decision.

Nothing in this package touches a socket or reads a clock; time is passed in.
"""
