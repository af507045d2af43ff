"""latentloop's OSC bridge: protocol, server adapter and client. Standard library + python-osc.

Modules (contract: docs/protocol.md):
    protocol     parse_message, reply builders, encode_message; re-exports the vocabulary
    spec         PROTOCOL_VERSION, addresses, default ports, limits
    commands     Address and the Command dataclasses (RenderCommand, CancelCommand, ...)
    errors       ProtocolError and FailCode
    packets      parse_packet: datagrams -> TimedMessage (bundles, timetags); NTP helpers
    values       decoded OSC argument types and checked conversions
    render_args  the two forms of /latentloop/render
    intake       datagram -> deliveries (what the receive thread does)
    scheduler    one-thread timetag scheduler
    server       OscServer and the CommandHandler protocol the daemon implements
    client       Client for the CLI, plugin stubs and tests
"""

__version__ = "0.1.0"
