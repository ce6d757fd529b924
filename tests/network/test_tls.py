"""DICOM TLS (PS3.15 B.9) and user identity (PS3.7 D.3.3.7) against real peers.

Peers: DCMTK's storescu with ``+tls`` (and ``--user``/``--password``) sending to our receiver;
DCMTK's storescp with ``+tls`` taking our echo and C-STORE; Orthanc with ``DicomTlsEnabled``
answering our echo, find and pull (C-GET, and C-MOVE back to us over TLS with
``UseDicomTls``); pynetdicom checking the user identity we send. The certificates are made here
at run time by a throwaway CA (``cryptography``); nothing secret is committed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dicomflow.errors import ConfigError
from dicomflow.network import (
    AssociationOptions,
    AssociationRejectedError,
    NetworkError,
    Peer,
    PullOptions,
    SCPOptions,
    StorageSCP,
    StoreSink,
    TLSError,
    TLSOptions,
    UserIdentity,
    echo,
    find,
    pull,
    read_records,
)
from dicomflow.network.protocol import AssociateAccept, AssociateRequest, tls_context
from dicomflow.pipeline import Instance

from .conftest import PEER_ENV, Orthanc, free_port, lake_files, wait_until

STORESCU = "/usr/bin/storescu"  # DCMTK's, not pynetdicom's console script


# -- a throwaway PKI -----------------------------------------------------------------------------


@dataclass
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, client certificates; and a
    second, untrusted CA with a client certificate of its own."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return str(self.files[name])


def _key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, key, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))  # fmt: skip
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _certificate(name: str, key, issuer=None, issuer_key=None, *, ca=False, server=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicomflow tests"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True,
        )  # fmt: skip
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] * server)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )  # fmt: skip
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)
    ca_key, rogue_key = _key(), _key()
    ca = _certificate("dicomflow test CA", ca_key, ca=True)
    rogue = _certificate("rogue CA", rogue_key, ca=True)
    _write(root / "ca", None, ca)
    _write(root / "rogue-ca", None, rogue)
    leaves = {
        "server": ("LAKE", ca, ca_key, True),  # our SCP (and Orthanc's C-MOVE destination)
        "orthanc": ("ORTHANC", ca, ca_key, True),  # Orthanc, as SCP and as SCU
        "client": ("MODALITY", ca, ca_key, False),  # our SCU, DCMTK's storescu
        "rogue": ("INTRUDER", rogue, rogue_key, False),  # signed by the untrusted CA
    }
    for name, (cn, issuer, issuer_key, server) in leaves.items():
        key = _key()
        _write(root / name, key, _certificate(cn, key, issuer, issuer_key, server=server))
    for path in root.iterdir():
        pki.files[path.name.replace(".pem", "").replace(".key", "-key")] = path
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_tls(pki: Pki, name: str = "client", **kw) -> TLSOptions:
    return TLSOptions(certificate=pki[name], private_key=pki[f"{name}-key"], ca_file=pki["ca"],
                      **kw)  # fmt: skip


def server_tls(pki: Pki, **kw) -> TLSOptions:
    return TLSOptions(certificate=pki["server"], private_key=pki["server-key"],
                      ca_file=pki["ca"], **kw)  # fmt: skip


def scp_options(port: int, pki: Pki, **kw) -> SCPOptions:
    kw.setdefault("tls", server_tls(pki, require_client_cert=True))
    return SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port,
                      calling_aes=kw.pop("calling_aes", ("MODALITY",)), **kw)  # fmt: skip


def send(port: int, path: Path, options: AssociationOptions) -> None:
    inst = Instance(str(path))
    inst._raw = path.read_bytes()
    sink = StoreSink(f"LAKE@127.0.0.1:{port}", options)
    try:
        sink.write(inst)
    finally:
        sink.close()


def storescu_tls(port: int, pki: Pki, files, *tls_args: str, calling: str = "MODALITY"):
    """DCMTK's storescu over TLS (``tls_args``: e.g. ``+tls KEY CERT``), trusting our CA."""
    return subprocess.run(
        [STORESCU, "-aet", calling, "-aec", "LAKE", *tls_args, "+cf", pki["ca"],
         "127.0.0.1", str(port), *[str(p) for p in files]],
        env=PEER_ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- options and contexts ------------------------------------------------------------------------


def test_contexts_follow_the_bcp195_profile(pki):
    client = tls_context(client_tls(pki), server=False)
    server = tls_context(server_tls(pki, require_client_cert=True), server=True)
    for ctx in (client, server):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12 and all("GCM" in c and ("ECDHE" in c or "DHE" in c) for c in tls12)
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert server.verify_mode == ssl.CERT_REQUIRED
    optional = tls_context(server_tls(pki), server=True)
    assert optional.verify_mode == ssl.CERT_OPTIONAL  # a CA, no requirement: checked if sent
    with pytest.raises(ConfigError, match="no such file"):
        tls_context(TLSOptions(ca_file=str(pki.root / "missing.pem")), server=False)
    with pytest.raises(ConfigError, match="cannot be used"):  # a key that is not the cert's
        tls_context(TLSOptions(certificate=pki["server"], private_key=pki["client-key"]),
                    server=True)  # fmt: skip
    with pytest.raises(ConfigError, match="needs ca_file"):
        TLSOptions(certificate=pki["server"], require_client_cert=True)
    with pytest.raises(ConfigError, match="1.2"):
        TLSOptions(minimum_version="1.1")
    with pytest.raises(ConfigError, match="certificate"):
        SCPOptions(tls=TLSOptions(ca_file=pki["ca"]))


def _handshake(port: int, pki: Pki, *, maximum: ssl.TLSVersion, ciphers: str) -> str:
    """A bare TLS client (Python's ssl, with our client certificate): the negotiated cipher."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"])
    ctx.load_cert_chain(pki["client"], pki["client-key"])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = maximum
    ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.cipher()[0]


def test_our_receiver_does_not_downgrade(tmp_path, pki):
    """TLS 1.2 with an ECDHE AES-GCM suite is taken; TLS 1.2 with RSA key exchange or CBC,
    and TLS 1.1, are not (the non-downgrading BCP 195 profile)."""
    port = free_port()
    with StorageSCP(tmp_path / "lake", scp_options(port, pki)) as scp:
        suite = _handshake(port, pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE+AESGCM")
        assert suite.startswith("ECDHE-RSA-AES") and "GCM" in suite
        for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
            with pytest.raises(ssl.SSLError):
                _handshake(port, pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers=weak)
        with pytest.raises(ssl.SSLError), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, on purpose
            _handshake(port, pki, maximum=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
        wait_until(lambda: scp.handshake_failures == 4, 30, "four refused handshakes")


# -- our receiver over TLS -----------------------------------------------------------------------


def test_receive_over_tls_from_dcmtk_storescu(tmp_path, pki, round_trip_files):
    port = free_port()
    files = round_trip_files[:4]
    with StorageSCP(tmp_path / "lake", scp_options(port, pki)) as scp:
        result = storescu_tls(port, pki, files, "+tls", pki["client-key"], pki["client"])
        assert result.returncode == 0, result.stderr
        assert scp.wait_idle(idle=0.2, timeout=30)
    assert len(lake_files(tmp_path / "lake")) == len(files)
    log = [a for a in scp.associations if a.accepted]
    assert len(log) == 1 and log[0].stored == len(files)
    assert log[0].tls is not None and log[0].tls.startswith("TLSv1.")
    assert "CN=MODALITY" in (log[0].certificate or "")
    assert scp.handshake_failures == 0


def test_plain_clients_are_refused_and_the_receiver_stays_up(tmp_path, pki, round_trip_files):
    port = free_port()
    path = round_trip_files[0]
    with StorageSCP(tmp_path / "lake", scp_options(port, pki)) as scp:
        plain = subprocess.run(
            [STORESCU, "-aet", "MODALITY", "-aec", "LAKE", "127.0.0.1", str(port), str(path)],
            env=PEER_ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert plain.returncode != 0
        with pytest.raises(NetworkError):
            send(port, path, AssociationOptions(calling_ae="MODALITY", acse_timeout=10))
        # still listening: a TLS sender gets through
        send(port, path, AssociationOptions(calling_ae="MODALITY", tls=client_tls(pki)))
        assert scp.wait_idle(idle=0.2, timeout=30)
    assert len(lake_files(tmp_path / "lake")) == 1
    assert scp.handshake_failures == 2
    reasons = [a.reason for a in scp.associations if not a.accepted]
    assert len(reasons) == 2 and all("TLS handshake failed" in (r or "") for r in reasons)


def test_client_certificates_not_from_the_ca_are_refused(tmp_path, pki, round_trip_files):
    port = free_port()
    path = round_trip_files[0]
    with StorageSCP(tmp_path / "lake", scp_options(port, pki, calling_aes=("*",))) as scp:
        rogue = storescu_tls(port, pki, [path], "+tls", pki["rogue-key"], pki["rogue"])
        assert rogue.returncode != 0
        anonymous = storescu_tls(port, pki, [path], "+tla")  # TLS without a certificate
        assert anonymous.returncode != 0
        with pytest.raises(TLSError):
            send(port, path, AssociationOptions(calling_ae="MODALITY",
                                                tls=client_tls(pki, "rogue")))  # fmt: skip
        with pytest.raises(TLSError):
            send(port, path, AssociationOptions(calling_ae="MODALITY",
                                                tls=TLSOptions(ca_file=pki["ca"])))  # fmt: skip
        good = storescu_tls(port, pki, [path], "+tls", pki["client-key"], pki["client"])
        assert good.returncode == 0, good.stderr
        assert scp.wait_idle(idle=0.2, timeout=30)
    assert scp.handshake_failures == 4
    assert len(lake_files(tmp_path / "lake")) == 1


def test_echo_and_store_over_tls_to_dcmtk_storescp(tmp_path, pki, round_trip_files):
    """DCMTK's storescp as the TLS server: it verifies our client certificate (its default)."""
    port = free_port()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(out), "+tls", pki["server-key"],
         pki["server"], "+cf", pki["ca"], str(port)],
        env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    peer = f"STORESCP@127.0.0.1:{port}"
    opts = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki))
    try:
        wait_until(lambda: echo(peer, options=opts) > 0, 30, "storescp +tls", proc)
        inst = Instance(str(round_trip_files[0]))
        inst._raw = round_trip_files[0].read_bytes()
        sink = StoreSink(peer, opts)
        try:
            sink.write(inst)
        finally:
            sink.close()
        with pytest.raises(TLSError):  # no client certificate: storescp requires one
            echo(peer, options=AssociationOptions(tls=TLSOptions(ca_file=pki["ca"])))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert len(list(out.iterdir())) == 1


def test_a_store_sink_from_a_pipeline_file_sends_over_tls(tmp_path, pki, round_trip_files):
    port = free_port()
    tls = {"ca_file": pki["ca"], "certificate": pki["client"], "private_key": pki["client-key"]}
    config = {"type": "c-store", "peer": f"LAKE@127.0.0.1:{port}", "calling_ae": "MODALITY",
              "tls": tls}  # fmt: skip
    sink = StoreSink.from_config(config)
    assert sink.config()["tls"]["ca_file"] == pki["ca"]
    assert StoreSink.from_config(sink.config()).options == sink.options
    with StorageSCP(tmp_path / "lake", scp_options(port, pki)) as scp:
        inst = Instance(str(round_trip_files[0]))
        inst._raw = round_trip_files[0].read_bytes()
        try:
            sink.write(inst)
        finally:
            sink.close()
        assert scp.wait_idle(idle=0.2, timeout=30)
    assert len(lake_files(tmp_path / "lake")) == 1
    with pytest.raises(ConfigError, match="tls"):
        StoreSink.from_config({**config, "tls": {"cafile": "x"}})


def test_we_refuse_a_server_certificate_not_from_our_ca(tmp_path, pki, round_trip_files):
    port = free_port()
    with StorageSCP(tmp_path / "lake", scp_options(port, pki)):
        untrusting = TLSOptions(certificate=pki["client"], private_key=pki["client-key"],
                                ca_file=pki["rogue-ca"])  # fmt: skip
        with pytest.raises(TLSError, match="certificate is not accepted"):
            echo(f"LAKE@127.0.0.1:{port}",
                 options=AssociationOptions(calling_ae="MODALITY", tls=untrusting))  # fmt: skip
        # the certificate names 127.0.0.1 and localhost, not another name
        wrong_name = client_tls(pki, server_hostname="pacs.example.org")
        with pytest.raises(TLSError, match="certificate is not accepted"):
            echo(f"LAKE@127.0.0.1:{port}",
                 options=AssociationOptions(calling_ae="MODALITY", tls=wrong_name))  # fmt: skip
        good = AssociationOptions(calling_ae="MODALITY", tls=client_tls(pki))
        assert echo(f"LAKE@localhost:{port}", options=good) > 0


def test_a_silent_peer_times_out_without_holding_a_slot(tmp_path, pki, round_trip_files):
    """A connection that never sends its ClientHello: the listener goes on accepting, the one
    association slot stays free, and the connection is closed at the ARTIM deadline."""
    port = free_port()
    opts = scp_options(port, pki, acse_timeout=2.0, max_associations=1)
    with StorageSCP(tmp_path / "lake", opts) as scp:
        silent = socket.create_connection(("127.0.0.1", port))
        try:
            # the one slot is free (one send: a second could race the first one's release)
            send(port, round_trip_files[0],
                 AssociationOptions(calling_ae="MODALITY", tls=client_tls(pki)))  # fmt: skip
            silent.settimeout(60)
            assert silent.recv(1) == b""  # closed by the listener
        finally:
            silent.close()
        wait_until(lambda: scp.handshake_failures == 1, 30, "the handshake failure counted")
    assert len(lake_files(tmp_path / "lake")) == 1
    failed = [a for a in scp.associations if not a.accepted]
    assert len(failed) == 1 and "not finished within" in (failed[0].reason or "")


def test_a_dripping_handshake_is_cut_at_the_artim_deadline(tmp_path, pki):
    """A ClientHello sent one byte at a time: every byte comes in time, but the handshake as a
    whole must end within ``acse_timeout``."""
    port = free_port()
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) + b"\x00" * 200  # a record header on
    with StorageSCP(tmp_path / "lake", scp_options(port, pki, acse_timeout=1.5)) as scp:
        with socket.create_connection(("127.0.0.1", port)) as drip:
            closed = False
            for byte in hello:  # at most about 40 s, far beyond the deadline
                try:
                    drip.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                if scp.handshake_failures:
                    closed = True
                    break
                threading.Event().wait(0.2)
        assert closed
        wait_until(lambda: scp.handshake_failures == 1, 30, "the handshake failure counted")
    failed = [a for a in scp.associations if not a.accepted]
    assert len(failed) == 1 and "not finished within 1.5 s" in (failed[0].reason or "")


def test_silent_connections_beyond_max_negotiating_are_dropped(tmp_path, pki, round_trip_files):
    """Here the ARTIM timer is long: the silent connection is dropped because a new one came
    while it was the oldest of ``max_negotiating`` still negotiating (in its TLS handshake)."""
    port = free_port()
    opts = scp_options(port, pki, acse_timeout=300.0, max_negotiating=1)
    with StorageSCP(tmp_path / "lake", opts) as scp:
        silent = socket.create_connection(("127.0.0.1", port))
        try:
            send(port, round_trip_files[0],
                 AssociationOptions(calling_ae="MODALITY", tls=client_tls(pki)))  # fmt: skip
            silent.settimeout(120)
            assert silent.recv(1) == b""
        finally:
            silent.close()
    assert len(lake_files(tmp_path / "lake")) == 1
    assert scp.handshake_failures == 1


# -- user identity: the bytes ----------------------------------------------------------------------


def _user_information(pdu: bytes) -> dict[int, bytes]:
    """The sub-items of an A-ASSOCIATE-RQ/AC body's User Information item (PS3.8 9.3.2/9.3.3),
    read independently of dicomflow's decoder."""
    pos = 68  # protocol version, reserved, called and calling AE, 32 reserved bytes
    while pos < len(pdu):
        item_type, length = pdu[pos], struct.unpack(">H", pdu[pos + 2 : pos + 4])[0]
        if item_type == 0x50:
            subs, sub = {}, pos + 4
            while sub < pos + 4 + length:
                kind, n = pdu[sub], struct.unpack(">H", pdu[sub + 2 : sub + 4])[0]
                assert pdu[sub + 1] == 0  # reserved
                subs[kind] = pdu[sub + 4 : sub + 4 + n]
                sub += 4 + n
            assert sub == pos + 4 + length
            return subs
        pos += 4 + length
    raise AssertionError("no User Information item")


def test_user_identity_sub_item_follows_ps3_7_d_3_3_7():
    identity = UserIdentity("alice", "s3crét", positive_response=True)
    rq = AssociateRequest("PACS", "DICOMFLOW", [(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])],
                          16384, "1.2.3", "", {}, identity)  # fmt: skip
    item = _user_information(rq.encode())[0x58]
    password = "s3crét".encode()
    # type 2 (user name and passcode), positive response requested, then both fields
    assert item == bytes([2, 1]) + b"\x00\x05alice" + struct.pack(">H", len(password)) + password
    assert AssociateRequest.decode(rq.encode()).identity == identity

    only_name = UserIdentity("bob")
    assert only_name.kind == 1
    rq.identity = only_name
    assert _user_information(rq.encode())[0x58] == b"\x01\x00\x00\x03bob\x00\x00"

    jwt = UserIdentity("eyJhbGciOi.e30.sig", kind=5)
    rq.identity = jwt
    assert _user_information(rq.encode())[0x58][:2] == b"\x05\x00"
    assert AssociateRequest.decode(rq.encode()).identity == jwt

    rq.identity = None
    assert 0x58 not in _user_information(rq.encode())

    # the A-ASSOCIATE-AC's server response: empty for user name and passcode
    ac = AssociateAccept("PACS", "DICOMFLOW", {1: (0, "1.2.840.10008.1.2")}, 16384, "1.2.3")
    assert 0x59 not in _user_information(ac.encode())
    ac.identity_response = b""
    assert _user_information(ac.encode())[0x59] == b"\x00\x00"
    assert AssociateAccept.decode(ac.encode()).identity_response == b""


def test_the_password_is_never_shown():
    identity = UserIdentity("alice", "s3cret")
    opts = AssociationOptions(identity=identity)
    assert "s3cret" not in repr(identity) and "s3cret" not in repr(opts)
    assert "s3cret" not in json.dumps(opts.config())
    assert opts.config()["identity"]["password"] == "(set)"
    with pytest.raises(ConfigError):
        UserIdentity("alice", "s3cret", kind=1)
    with pytest.raises(ConfigError):
        UserIdentity("")


# -- user identity: our receiver checks it -------------------------------------------------------


def _alice(identity: UserIdentity | None) -> bool:
    return identity is not None and (identity.username, identity.password) == ("alice", "s3cret")


def test_our_receiver_accepts_and_refuses_by_identity(tmp_path, pki):
    port = free_port()
    opts = scp_options(port, pki, tls=None, authenticate=_alice)
    peer = f"LAKE@127.0.0.1:{port}"

    def as_user(identity):
        return AssociationOptions(calling_ae="MODALITY", identity=identity)

    with StorageSCP(tmp_path / "lake", opts) as scp:
        assert echo(peer, options=as_user(UserIdentity("alice", "s3cret"))) > 0
        # a positive response asked for comes back (an empty server response)
        confirm = UserIdentity("alice", "s3cret", positive_response=True)
        assert echo(peer, options=as_user(confirm)) > 0
        for wrong in (UserIdentity("alice", "guess"), UserIdentity("alice"), None):
            with pytest.raises(AssociationRejectedError, match="no reason given"):
                echo(peer, options=as_user(wrong))
    # (each log is kept when its thread ends: the order may differ from the order of requests)
    users = sorted((a.username or "", a.accepted) for a in scp.associations)
    assert users == [("", False), ("alice", False), ("alice", False), ("alice", True),
                     ("alice", True)]  # fmt: skip
    assert all(a.reason == "user 'alice': not authenticated" for a in scp.associations
               if a.username and not a.accepted)  # fmt: skip


def test_pynetdicom_checks_the_identity_we_send():
    """An independent decoder of the User Identity sub-item: pynetdicom's acceptor. It confirms
    a token (kind 5) with a server response; for a user name and passcode it sends none."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    from dicomflow.network.protocol import VERIFICATION, open_association

    seen = []

    def check(event):
        seen.append((event.user_id_type, event.primary_field, event.secondary_field))
        fields = (event.primary_field, event.secondary_field)
        ok = fields == (b"alice", b"s3cret") or event.primary_field == b"header.e30.sig"
        return ok, (b"server-token" if ok else None)

    ae = AE(ae_title="IDSCP")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_USER_ID, check)])  # fmt: skip
    peer = f"IDSCP@127.0.0.1:{port}"
    try:
        assert echo(peer, options=AssociationOptions(identity=UserIdentity("alice", "s3cret")))
        with pytest.raises(AssociationRejectedError):
            echo(peer, options=AssociationOptions(identity=UserIdentity("alice", "wrong")))
        token = UserIdentity("header.e30.sig", kind=5, positive_response=True)
        conn, accept = open_association(Peer.parse(peer), AssociationOptions(identity=token),
                                        [(1, VERIFICATION, ["1.2.840.10008.1.2"])])  # fmt: skip
        conn.release()
        assert accept.identity_response == b"server-token"
    finally:
        server.shutdown()
    assert seen[:2] == [(2, b"alice", b"s3cret"), (2, b"alice", b"wrong")]
    assert seen[2][:2] == (5, b"header.e30.sig")


def test_receive_command_with_tls_and_users_from_dcmtk(tmp_path, pki, round_trip_files):
    """``dicomflow receive --tls-* --users``: DCMTK's storescu sends its user identity over
    TLS; the right password lands, a wrong one is refused."""
    port = free_port()
    lake = tmp_path / "lake"
    users = tmp_path / "users.txt"
    users.write_text("# name:password\nalice:s3cret\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY",
         "--tls-cert", pki["server"], "--tls-key", pki["server-key"], "--tls-ca", pki["ca"],
         "--tls-require-client-cert", "--users", str(users)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    tls = ("+tls", pki["client-key"], pki["client"])
    try:
        wait_until(lambda: (lake / "_lake").is_dir() and _listening(port), 30, "receive", proc)
        wrong = storescu_tls(port, pki, round_trip_files[:1], *tls, "--user", "alice",
                             "--password", "guess")  # fmt: skip
        assert wrong.returncode != 0
        nobody = storescu_tls(port, pki, round_trip_files[:1], *tls)
        assert nobody.returncode != 0
        right = storescu_tls(port, pki, round_trip_files[:3], *tls, "--user", "alice",
                             "--password", "s3cret", "--pos-response")  # fmt: skip
        assert right.returncode == 0, right.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "over TLS" in err and "3 instances landed" in err
    assert len(lake_files(lake)) == 3
    assert read_records(str(lake)).num_rows == 3


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- Orthanc with DICOM TLS ----------------------------------------------------------------------


class TlsOrthanc(Orthanc):
    """Orthanc whose DICOM port speaks TLS only and requires client certificates."""

    def configure(self, pki: Pki) -> TlsOrthanc:
        path = self.workdir / "orthanc.json"
        config = json.loads(path.read_text())
        config.update({
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": pki["orthanc"],
            "DicomTlsPrivateKey": pki["orthanc-key"],
            "DicomTlsTrustedCertificates": pki["ca"],
            "DicomTlsRemoteCertificateRequired": True,
        })  # fmt: skip
        path.write_text(json.dumps(config, indent=1))
        self.pki = pki
        return self

    def start(self) -> TlsOrthanc:
        import requests

        self.proc = subprocess.Popen(
            ["Orthanc", "--no-jobs", f"--logfile={self.workdir / 'orthanc.log'}",
             str(self.workdir / "orthanc.json")],
            env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        opts = AssociationOptions(calling_ae="PROBE", connection_timeout=1, acse_timeout=2,
                                  tls=client_tls(self.pki))  # fmt: skip
        wait_until(lambda: requests.get(f"{self.url}/system", timeout=1).ok, 30, "Orthanc HTTP",
                   self.proc)  # fmt: skip
        wait_until(lambda: echo(self.peer, options=opts) >= 0, 30, "Orthanc TLS", self.proc)
        return self

    def register_tls(self, aet: str, port: int) -> None:
        import requests

        r = requests.put(f"{self.url}/modalities/{aet}",
                         json={"AET": aet, "Host": "127.0.0.1", "Port": port,
                               "UseDicomTls": True}, timeout=10)  # fmt: skip
        r.raise_for_status()


@pytest.fixture(scope="module")
def orthanc_tls(tmp_path_factory, peers_available, pki, round_trip_files):
    server = TlsOrthanc(tmp_path_factory.mktemp("orthanc-tls")).configure(pki).start()
    try:
        server.upload(round_trip_files)
        yield server
    finally:
        server.kill()


CT_STUDY_FILES = 28  # series/dcm_qa_ct_ge


def test_echo_and_find_over_tls_to_orthanc(orthanc_tls, pki):
    opts = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki))
    assert echo(orthanc_tls.peer, options=opts) > 0
    studies = find(orthanc_tls.peer, "", level="study", options=opts)
    assert studies.num_rows >= 1
    series = find(orthanc_tls.peer, "Modality=CT", level="series", options=opts)
    assert series.num_rows >= 1
    # Orthanc ignores a user identity (and does not confirm one)
    named = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki),
                               identity=UserIdentity("alice", "s3cret"))  # fmt: skip
    assert echo(orthanc_tls.peer, options=named) > 0
    confirm = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki),
                                 identity=UserIdentity("alice", "s3cret",
                                                       positive_response=True))  # fmt: skip
    with pytest.raises(AssociationRejectedError, match="without confirming"):
        echo(orthanc_tls.peer, options=confirm)


def test_orthanc_refuses_plain_and_certificate_less_clients(orthanc_tls, pki):
    with pytest.raises(NetworkError):
        echo(orthanc_tls.peer, options=AssociationOptions(calling_ae="LAKE", acse_timeout=10))
    for tls in (TLSOptions(ca_file=pki["ca"]), client_tls(pki, "rogue")):
        # Orthanc requires a client certificate signed by a CA it trusts
        with pytest.raises(TLSError):
            echo(orthanc_tls.peer, options=AssociationOptions(calling_ae="LAKE", tls=tls))
    good = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki))
    assert echo(orthanc_tls.peer, options=good) > 0


def _ct_study(orthanc: Orthanc, opts: AssociationOptions) -> str:
    series = find(orthanc.peer, "Modality=CT", level="series", options=opts)
    rows = series.to_pylist()
    return next(r["study_instance_uid"] for r in rows
                if r["NumberOfSeriesRelatedInstances"] == CT_STUDY_FILES)  # fmt: skip


def test_pull_by_c_get_over_tls_from_orthanc(tmp_path, orthanc_tls, pki):
    opts = AssociationOptions(calling_ae="LAKE", tls=client_tls(pki))
    study = _ct_study(orthanc_tls, opts)
    report = pull(orthanc_tls.peer, {"StudyInstanceUID": study}, str(tmp_path / "lake"),
                  PullOptions(ae_title="LAKE", method="get", association=opts))  # fmt: skip
    assert report.complete, report.table.to_pylist()
    assert report.method == "get"
    assert len(lake_files(tmp_path / "lake")) == CT_STUDY_FILES


def test_pull_by_c_move_over_tls_from_orthanc(tmp_path, orthanc_tls, pki):
    """Orthanc stores back to our Storage SCP over TLS (``UseDicomTls``), presenting its own
    certificate, which our SCP requires."""
    opts = AssociationOptions(calling_ae="MOVETLS", tls=client_tls(pki))
    study = _ct_study(orthanc_tls, opts)
    port = free_port()
    orthanc_tls.register_tls("MOVETLS", port)
    popts = PullOptions(ae_title="MOVETLS", host="127.0.0.1", port=port, method="move",
                        association=opts,
                        scp_tls=server_tls(pki, require_client_cert=True))  # fmt: skip
    report = pull(orthanc_tls.peer, {"StudyInstanceUID": study}, str(tmp_path / "lake"), popts)
    assert report.complete, report.table.to_pylist()
    assert report.method == "move"
    assert len(lake_files(tmp_path / "lake")) == CT_STUDY_FILES


def test_cli_echo_find_pull_over_tls(tmp_path, orthanc_tls, pki, capsys, monkeypatch):
    """``dicomflow echo|find|pull --tls-ca --tls-cert --tls-key`` (and a user identity, which
    Orthanc ignores; the password comes from the environment)."""
    from dicomflow.cli import main

    tls = ["--tls-ca", pki["ca"], "--tls-cert", pki["client"], "--tls-key", pki["client-key"]]
    pacs = ["--pacs", str(orthanc_tls.peer), "--ae", "LAKE"]
    monkeypatch.setenv("DICOMFLOW_TEST_PASSWORD", "s3cret")
    who = ["--username", "alice", "--password-env", "DICOMFLOW_TEST_PASSWORD"]
    assert main(["echo", *pacs, *tls, *who]) == 0
    assert "C-ECHO ok" in capsys.readouterr().out
    out = tmp_path / "series.parquet"
    assert main(["find", *pacs, *tls, "--level", "series", "--query", "Modality=CT",
                 "-o", str(out)]) == 0  # fmt: skip
    assert out.exists()
    study = _ct_study(orthanc_tls, AssociationOptions(calling_ae="LAKE", tls=client_tls(pki)))
    lake = ["--lake", str(tmp_path / "lake")]
    query = ["--query", f"StudyInstanceUID={study}"]
    assert main(["pull", *pacs, *tls, "--method", "get", *query, *lake, "-q"]) == 0
    assert len(lake_files(tmp_path / "lake")) == CT_STUDY_FILES
    # C-MOVE: Orthanc stores to the SCP pull starts, over TLS with our server certificate
    port = free_port()
    orthanc_tls.register_tls("CLIMOVE", port)
    moved = ["--lake", str(tmp_path / "moved"), "--port", str(port), "--bind", "127.0.0.1"]
    server = ["--tls-receive", "--tls-ca", pki["ca"], "--tls-cert", pki["server"],
              "--tls-key", pki["server-key"]]  # fmt: skip
    move = ["pull", "--pacs", str(orthanc_tls.peer), "--ae", "CLIMOVE", "--method", "move"]
    assert main([*move, *server, *query, *moved, "-q"]) == 0
    assert len(lake_files(tmp_path / "moved")) == CT_STUDY_FILES
    # no TLS against a TLS-only port: an error, not a hang
    assert main(["echo", *pacs, "--timeout", "10"]) != 0
    capsys.readouterr()
    assert main(["echo", *pacs, *tls, "--username", "a", "--password-env", "NO_SUCH_VAR_X"]) != 0
    assert "NO_SUCH_VAR_X: the variable is not set" in capsys.readouterr().err


def test_cli_password_is_never_an_argument():
    from dicomflow.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["echo", "--pacs", "A@h:1", "--password", "x"])
