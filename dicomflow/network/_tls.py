"""DICOM TLS (PS3.15 B.9): the one place a :class:`~ssl.SSLContext` is built from options.

The Upper Layer (:mod:`._ul`) wraps a requestor's socket right after it connects, and the
listener (:mod:`._server`) wraps each accepted connection in that connection's own thread, so
a peer that never finishes its handshake holds neither the listener nor an association slot.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from ..errors import ConfigError
from ._options import TLSOptions

__all__ = ["describe", "peer_subject", "ssl_reason", "tls_context"]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def tls_context(options: TLSOptions, *, server: bool) -> ssl.SSLContext:
    """The :class:`ssl.SSLContext` for ``options``: ours as acceptor (``server``) or requestor.

    TLS 1.2 at least (``options.minimum_version``), the BCP 195 non-downgrading cipher suites
    for TLS 1.2 (``options.ciphers``), no compression, no renegotiation.

    Raises
    ------
    ConfigError
        A file is missing or unreadable, a key does not match its certificate, the cipher list
        selects nothing, or an acceptor has no certificate.

    Examples
    --------
    >>> import ssl
    >>> ctx = tls_context(TLSOptions(), server=False)  # the system's trust store
    >>> ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.check_hostname
    True
    """
    if server:
        if options.certificate is None:
            raise ConfigError("a TLS acceptor needs a certificate and its private key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        if options.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif options.ca_file is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if options.verify:
            ctx.check_hostname = options.check_hostname
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = _VERSIONS[options.minimum_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        ctx.set_ciphers(options.ciphers)
    except ssl.SSLError as exc:
        raise ConfigError(f"TLS ciphers {options.ciphers!r} select no cipher suite") from exc
    if options.ca_file is not None:
        _load(ctx.load_verify_locations, "CA file", options.ca_file, cafile=options.ca_file)
    elif not server and options.verify:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if options.certificate is not None:
        _load(ctx.load_cert_chain, "certificate", options.certificate,
              certfile=options.certificate, keyfile=options.private_key)  # fmt: skip
    return ctx


def _load(method: Any, what: str, path: str, **kwargs: Any) -> None:
    try:
        method(**kwargs)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS {what} {path!r}: no such file ({exc.filename})") from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"TLS {what} {path!r} cannot be used: {exc} (PEM expected; an encrypted private key "
            "is not supported; does the key match the certificate?)"
        ) from exc


def describe(sock: Any) -> str | None:
    """``'TLSv1.3 TLS_AES_256_GCM_SHA384'`` for a TLS socket, None for a plain one."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cipher = sock.cipher()
    return f"{sock.version()} {cipher[0]}" if cipher else sock.version()


def peer_subject(sock: Any) -> str | None:
    """The peer certificate's subject (``'CN=modality,O=Hospital'``), if it presented one."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return None
    if not cert:
        return None
    subject: Any = cert.get("subject", ())
    parts = [f"{k}={v}" for rdn in subject for k, v in rdn]
    names = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C"}  # fmt: skip
    for name, short in names.items():
        parts = [p.replace(f"{name}=", f"{short}=", 1) for p in parts]
    return ",".join(parts) or None


def ssl_reason(exc: OSError) -> str:
    """What OpenSSL says went wrong, in words: ``'certificate verify failed'``."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    text = str(exc.strerror or exc) if isinstance(exc, ssl.SSLError) else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text) or type(exc).__name__
