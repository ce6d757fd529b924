"""Who to talk to and how: small frozen value objects, picklable and JSON-able."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["AssociationOptions", "Peer", "TLSOptions", "UserIdentity"]

#: The cipher suites of the Non-Downgrading BCP 195 TLS Secure Transport Connection Profile
#: (PS3.15 B.9) for TLS 1.2, in OpenSSL's names: ECDHE or DHE key exchange, AES-GCM. TLS 1.3
#: suites (all AEAD) are negotiated as OpenSSL allows them and are not affected by this list.
BCP195_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))  # fmt: skip

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
class TLSOptions:
    """DICOM TLS (PS3.15 B.9, the non-downgrading BCP 195 profile): files and checks, no state.

    One value serves both roles. As a requestor (SCU) we verify the peer's certificate against
    ``ca_file`` (or the system's trust store when it is None) and its name against the host we
    connect to (``server_hostname`` overrides it), and present ``certificate`` as our client
    certificate if one is given. As an acceptor (SCP) ``certificate`` and ``private_key`` are
    the server's, and ``ca_file`` verifies the client certificates: required with
    ``require_client_cert``, else checked only when a client presents one. The registered
    DICOM TLS port is 2762. :func:`~dicomflow.network.protocol.tls_context` builds the
    :class:`ssl.SSLContext`; the paths are read when an association (SCU) or the listener
    (SCP) starts, so the options pickle and travel to workers.

    Parameters
    ----------
    certificate
        PEM file with our certificate (and the intermediates after it); needed by an SCP.
    private_key
        PEM file with its unencrypted private key (None: the key is in ``certificate``).
    ca_file
        PEM bundle of the certificate authorities we trust for the peer.
    require_client_cert
        SCP: refuse a client that presents no certificate signed by ``ca_file``.
    verify
        SCU: verify the server's certificate (turn off only for tests: anyone can then
        pretend to be the peer).
    check_hostname
        SCU: the server's certificate must name the host (or IP address) we connect to.
    server_hostname
        SCU: the name to expect in the server's certificate (and to send as SNI) when it is not
        the host connected to.
    minimum_version
        ``"1.2"`` (the profile's minimum) or ``"1.3"``.
    ciphers
        OpenSSL cipher list for TLS 1.2 (default: the BCP 195 non-downgrading suites).

    Examples
    --------
    >>> client = TLSOptions(ca_file="ca.pem", certificate="me.pem", private_key="me.key")
    >>> server = TLSOptions(certificate="scp.pem", private_key="scp.key", ca_file="ca.pem",
    ...                     require_client_cert=True)
    """

    certificate: str | None = None
    private_key: str | None = None
    ca_file: str | None = None
    require_client_cert: bool = False
    verify: bool = True
    check_hostname: bool = True
    server_hostname: str | None = None
    minimum_version: str = "1.2"
    ciphers: str = BCP195_CIPHERS

    def __post_init__(self) -> None:
        for name in ("certificate", "private_key", "ca_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        if self.minimum_version not in ("1.2", "1.3"):
            raise ConfigError(
                f"minimum_version={self.minimum_version!r}: expected '1.2' or '1.3' (DICOM TLS "
                "needs TLS 1.2 at least)"
            )
        if self.private_key is not None and self.certificate is None:
            raise ConfigError("a TLS private key without its certificate")
        if self.require_client_cert and self.ca_file is None:
            raise ConfigError("require_client_cert needs ca_file: the CAs client certificates "
                              "must be signed by")  # fmt: skip


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """User Identity negotiation (PS3.7 D.3.3.7): who we are, sent in the A-ASSOCIATE-RQ.

    ``kind`` 1 sends a user name, 2 a user name and a passcode (the default when ``password``
    is given). Kinds 3, 4 and 5 send a Kerberos service ticket, a SAML assertion or a JSON Web
    Token, given as ``username`` (the primary field). With ``positive_response`` the acceptor
    is asked to confirm the identity, and an association it accepts without confirming is
    aborted. The password is never shown: not in ``repr``, not in ``config()``. It travels in
    clear unless the association runs over TLS.

    Examples
    --------
    >>> UserIdentity("alice", "s3cret")
    UserIdentity(username='alice', kind=2, positive_response=False)
    """

    username: str
    password: str = field(default="", repr=False)
    kind: int = 0
    positive_response: bool = False

    def __post_init__(self) -> None:
        kind = self.kind or (2 if self.password else 1)
        if kind not in (1, 2, 3, 4, 5):
            raise ConfigError(f"user identity kind {self.kind}: expected 1-5 (PS3.7 D.3.3.7)")
        if not self.username:
            raise ConfigError("a user identity needs a user name (or token)")
        if self.password and kind != 2:
            raise ConfigError("only a user identity of kind 2 carries a password")
        for name, value in (("user name", self.username), ("password", self.password)):
            if len(value.encode("utf-8")) > 65535:
                raise ConfigError(f"the {name} is longer than a user identity field holds")
        object.__setattr__(self, "kind", kind)

    def config(self) -> dict[str, Any]:
        """The identity without its secret (``password`` is shown as set or not)."""
        return {"username": self.username, "kind": self.kind,
                "positive_response": self.positive_response,
                "password": "(set)" if self.password else ""}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AssociationOptions:
    """How dicomflow associates: our AE title, PDU size, timeouts (seconds).

    ``max_pdu`` is the largest PDU we accept (0: no limit), announced in the A-ASSOCIATE. A
    peer sends P-DATA PDUs up to this size, so a large value means fewer, bigger reads (at
    16 KB, a 512 x 512 CT image takes 32 PDUs). Once associated, each message is waited for
    up to ``dimse_timeout`` (``network_timeout`` when that is None); ``tcp_nodelay`` turns
    Nagle's algorithm off on our sockets (without it, every small PDU waits for a delayed ACK).
    ``tls`` (:class:`TLSOptions`) runs every association over DICOM TLS; ``identity``
    (:class:`UserIdentity`) is sent in every A-ASSOCIATE-RQ.
    """

    calling_ae: str = "DICOMFLOW"
    max_pdu: int = 1 << 20
    connection_timeout: float | None = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float | None = 120.0
    network_timeout: float | None = 120.0
    tcp_nodelay: bool = True
    tls: TLSOptions | None = None
    identity: UserIdentity | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "calling_ae", check_ae_title(self.calling_ae, "calling AE"))
        if self.max_pdu < 0:
            raise ConfigError(f"max_pdu must be >= 0, got {self.max_pdu}")

    def config(self) -> dict[str, Any]:
        """The options as plain values; a password is never included."""
        out = asdict(self)
        out["identity"] = None if self.identity is None else self.identity.config()
        return out
