"""The overlay family of ports: VXLAN segments (wire format, option spec, VTEP map) and vxvde."""
