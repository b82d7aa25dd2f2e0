"""The IC WebSocket gateway: a drop-in for omnia-network/ic-websocket-gateway 1.4.x.

Run it with ``icws-gateway`` (:mod:`icws_fast.gateway.cli`) or embed
:class:`icws_fast.gateway.server.Gateway` with a :class:`icws_fast.gateway.config.GatewayConfig`.
This package module imports nothing, so the byte-level helpers of :mod:`icws_fast.gateway.fanout`
load without the rest.
"""
