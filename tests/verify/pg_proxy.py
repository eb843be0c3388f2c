"""A TCP proxy in front of PostgreSQL that can make the database refuse
connections for a while, without touching the machine's shared server.

The suite's DATABASE_URL names the proxy. `refuse(seconds)` stops listening
(new connections are refused by the kernel), cuts every open connection,
then listens again on the same port.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from libs.logs import get_logger
from tests.suite import free_port

log = get_logger(__name__)

CHUNK_BYTES = 64 * 1024


@dataclass
class PostgresProxy:
    """Forwards 127.0.0.1:`port` to the PostgreSQL at `target_host`:`target_port`."""

    target_host: str
    target_port: int
    port: int = field(default_factory=free_port)
    connections: int = 0
    _server: asyncio.Server | None = None
    # Both transports of every open connection, to cut them.
    _open: set[tuple[asyncio.Transport, asyncio.Transport]] = field(default_factory=set)

    @classmethod
    def for_url(cls, database_url: str) -> PostgresProxy:
        url = make_url(database_url)
        return cls(url.host or "127.0.0.1", url.port or 5432)

    def url_for(self, database_url: str) -> str:
        """`database_url` pointed at the proxy."""
        proxied = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return proxied.render_as_string(hide_password=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        self._close()

    async def refuse(self, seconds: float) -> int:
        """Refuse and cut connections for `seconds`; how many were cut."""
        cut = len(self._open)
        self._close()
        log.warning("pg_proxy.refusing", seconds=seconds, cut=cut)
        await asyncio.sleep(seconds)
        await self.start()
        log.warning("pg_proxy.accepting")
        return cut

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._open):
            for transport in pair:
                transport.abort()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer.transport, server_writer.transport)
        self._open.add(pair)  # type: ignore[arg-type]
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(client_reader, server_writer))
                group.create_task(_pipe(server_reader, client_writer))
        except* OSError:
            pass
        finally:
            self._open.discard(pair)  # type: ignore[arg-type]
            for transport in pair:
                transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side closes; then end the pair."""
    while chunk := await reader.read(CHUNK_BYTES):
        writer.write(chunk)
        await writer.drain()
    raise ConnectionResetError("one side closed")
