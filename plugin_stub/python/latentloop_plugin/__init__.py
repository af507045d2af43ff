"""A plugin-shaped latentloop client: host tempo in, loop out on the next bar (see stub.py)."""

from latentloop_plugin.stub import CLICK, Launch, PluginStub, Transport

__all__ = ["CLICK", "Launch", "PluginStub", "Transport"]
