"""umlswitch: a drop-in, trio-based replacement for the uml_switch virtual ethernet switch."""

__version__ = "0.1.0"
