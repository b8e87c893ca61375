"""uvicorn's HTTP protocol with TCP_NODELAY on every connection (`manymodels serve --workers N`).

For more than one worker uvicorn binds the listening socket itself (`socket.socket(family)`,
protocol number 0), and asyncio turns Nagle's algorithm off only for sockets whose protocol
number is IPPROTO_TCP. Connections accepted there keep Nagle on: on a kept-alive connection
each response written in two sends (headers, then body) waits for the client's delayed ACK,
about 40 ms per request on Linux. One worker binds through asyncio and never stalls.
"""
from __future__ import annotations

import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
