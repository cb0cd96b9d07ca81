"""``attach`` and ``attach_sync``: a harness port over the transport a test asks for.

A UML guest's handshake and datagram socket (``port.py``), or one stream connection with
QEMU's length framing to a ``--stream`` listener (``stream.py``).
"""

from __future__ import annotations

from types import TracebackType

from umlswitch.testing.port import GUEST, TRANSPORTS, AsyncPort, Handshake, SyncPort
from umlswitch.testing.stream import AsyncStreamPort, SyncStreamPort


def attach_sync(
    ctl: str,
    *,
    mac: str | bytes | None = None,
    timeout: float = 5.0,
    transport: str = "daemon",
    dialect: str = "v3",
    description: str | None = None,
    requested_port: int = 0,
    data_path: str | None = None,
    address: bytes | str | None = None,
) -> SyncPort:
    """Attach a blocking port to the switch whose control socket is ``ctl``, as a UML guest
    does; ``dialect``, ``description``, ``requested_port``, ``data_path`` and ``address``
    attach as another client does (see the module docstring).

    ``transport="stream"``: connect as QEMU's ``-netdev stream`` does instead, to ``ctl`` =
    a ``--stream`` listener (``unix:PATH``, ``tcp:HOST:PORT``, or a socket path).
    """
    handshake = Handshake(dialect, description, requested_port, data_path, address)
    _check_transport(transport, handshake)
    if transport == "stream":
        return SyncStreamPort(ctl, mac=mac, timeout=timeout)
    return SyncPort(ctl, mac=mac, timeout=timeout, handshake=handshake)


def _check_transport(transport: str, handshake: Handshake) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    if transport == "stream" and handshake != GUEST:
        raise ValueError(
            "dialect=, description=, requested_port=, data_path= and address= go with "
            "transport='daemon'"
        )


class attach:
    """``async with attach(ctl, mac=...) as port``: a trio port, detached on exit.

    ``dialect``, ``description``, ``requested_port``, ``data_path`` and ``address`` attach as
    another client does (see the module docstring). ``transport="stream"``: connect as QEMU's
    ``-netdev stream`` does instead, to ``ctl`` = a ``--stream`` listener (``unix:PATH``,
    ``tcp:HOST:PORT``, or a socket path).
    """

    def __init__(
        self,
        ctl: str,
        *,
        mac: str | bytes | None = None,
        timeout: float = 5.0,
        transport: str = "daemon",
        dialect: str = "v3",
        description: str | None = None,
        requested_port: int = 0,
        data_path: str | None = None,
        address: bytes | str | None = None,
    ):
        self._handshake = Handshake(dialect, description, requested_port, data_path, address)
        _check_transport(transport, self._handshake)
        self._ctl = ctl
        self._mac = mac
        self._timeout = timeout
        self._transport = transport
        self._port: AsyncPort | None = None

    async def __aenter__(self) -> AsyncPort:
        port: AsyncPort
        if self._transport == "stream":
            port = AsyncStreamPort(self._mac)
        else:
            port = AsyncPort(self._mac, self._handshake)
        try:
            await port._connect(self._ctl, self._timeout)
        except BaseException:
            port.close()
            raise
        self._port = port
        return port

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._port is not None:
            self._port.close()
