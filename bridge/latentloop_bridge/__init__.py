"""latentloop's OSC bridge: protocol, server adapter and client. Standard library + python-osc."""

__version__ = "0.1.0"
