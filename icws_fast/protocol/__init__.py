"""The IC WebSocket protocol: message types and codecs (:mod:`.types`), and the sans-IO state machines of the
gateway (``session``) and the client (``client``)."""
