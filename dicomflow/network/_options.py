"""Who to talk to and how: small frozen value objects, picklable and JSON-able."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["AssociationOptions", "Peer"]

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")


def check_ae_title(value: str, what: str = "AE title") -> str:
    """An AE title as DICOM allows it: 1-16 characters, no backslash or control characters."""
    text = value.strip()
    if not 1 <= len(text) <= 16 or "\\" in text or not text.isprintable() or not text.isascii():
        raise ConfigError(f"{what} {value!r}: expected 1-16 printable ASCII characters, no '\\'")
    return text


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote DICOM application entity: its AE title, host and port.

    Examples
    --------
    >>> Peer.parse("ORTHANC@127.0.0.1:4242")
    Peer(ae_title='ORTHANC', host='127.0.0.1', port=4242)
    >>> str(Peer("PACS", "10.0.0.5", 104))
    'PACS@10.0.0.5:104'
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "peer AE title"))
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port {self.port} is out of range 1-65535")
        object.__setattr__(self, "port", int(self.port))

    @classmethod
    def parse(cls, text: str | Peer) -> Peer:
        """Parse ``AE@HOST:PORT`` (IPv6 hosts in brackets: ``AE@[::1]:104``)."""
        if isinstance(text, Peer):
            return text
        match = _PEER.match(text.strip())
        if not match:
            raise ConfigError(f"peer {text!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
        host = match["host"].strip("[]")
        return cls(match["ae"], host, int(match["port"]))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AssociationOptions:
    """How dicomflow associates: our AE title, PDU size, timeouts (seconds).

    ``max_pdu`` is the largest PDU we accept (0: no limit), announced in the A-ASSOCIATE. A
    peer sends P-DATA PDUs up to this size, so a large value means fewer, bigger reads (at
    16 KB, a 512 x 512 CT image takes 32 PDUs). Once associated, each message is waited for
    up to ``dimse_timeout`` (``network_timeout`` when that is None); ``tcp_nodelay`` turns
    Nagle's algorithm off on our sockets (without it, every small PDU waits for a delayed ACK).
    """

    calling_ae: str = "DICOMFLOW"
    max_pdu: int = 1 << 20
    connection_timeout: float | None = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float | None = 120.0
    network_timeout: float | None = 120.0
    tcp_nodelay: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "calling_ae", check_ae_title(self.calling_ae, "calling AE"))
        if self.max_pdu < 0:
            raise ConfigError(f"max_pdu must be >= 0, got {self.max_pdu}")

    def config(self) -> dict[str, Any]:
        return asdict(self)
