"""The IC WebSocket client SDK: :class:`IcWebSocket` (asyncio) and :class:`SyncIcWebSocket` (blocking, gevent-friendly).

:class:`ReconnectingIcWebSocket` and :class:`ReconnectingSyncIcWebSocket` open a new session when theirs ends
(behind a load balancer: on another gateway); their docstrings say what a reconnect loses.

Both behave as the official JS SDK (``ic-websocket-js``) does and share the sans-IO core
:class:`icws_fast.protocol.client.ClientProtocol`::

    ws = await IcWebSocket.connect(gateway_url, canister_id, ic_url)
    await ws.send({"text": "hello", "timestamp": 0})
    print(await ws.recv())
    await ws.close()
"""

from __future__ import annotations

from icws_fast.client.aio import IcWebSocket, ReconnectingIcWebSocket
from icws_fast.client.sync import ReconnectingSyncIcWebSocket, SyncIcWebSocket, fetch_root_key
from icws_fast.errors import ConnectionClosed

__all__ = [
    "ConnectionClosed",
    "IcWebSocket",
    "ReconnectingIcWebSocket",
    "ReconnectingSyncIcWebSocket",
    "SyncIcWebSocket",
    "fetch_root_key",
]
