"""The wire-level building blocks of dicomflow's DIMSE stack, for an SCU or SCP of your own.

``dfl.network`` (echo, find, get, move, pull, the SCPs) is built from these, and so are the
protocol tests; nothing else in dicomflow speaks DICOM on a socket.

* the Upper Layer (PS3.8): association PDUs, :func:`open_association` and
  :func:`accept_association`, :class:`Connection` (P-DATA fragments, release, abort), and the
  PDU type numbers;
* DIMSE messages (PS3.7): command sets (:func:`encode_command`, :func:`decode_command`), one
  builder per request, :func:`response`, the command field numbers, status categories, and
  identifiers (:func:`encode_identifier`, :func:`identifier_header`);
* :func:`tls_context`, the :class:`ssl.SSLContext` a :class:`~dicomflow.network.TLSOptions`
  stands for (DICOM TLS: at least TLS 1.2, the BCP 195 non-downgrading cipher suites);
* :func:`iter_find`, the C-FIND answers streamed as parsed identifiers;
* queries: parsing ``'Modality=CT StudyDate=...'`` (dates and times in ISO form too), the
  keys a level can match (:func:`keys_at_level`), identifiers per level, typed result tables,
  and :func:`match_value`, the attribute matching of PS3.4 C.2.2.2 the Q/R SCP answers with.
"""

from __future__ import annotations

from ._dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    MODEL_UIDS,
    QR_SYNTAXES,
    VERIFICATION,
    Message,
    c_cancel_rq,
    c_echo_rq,
    c_find_rq,
    c_get_rq,
    c_move_rq,
    c_store_rq,
    decode_command,
    encode_command,
    encode_identifier,
    identifier_header,
    response,
    status_category,
    text,
    us,
)
from ._qr import match_value
from ._query import (
    LEVELS,
    MODELS,
    Query,
    identifier,
    keys_at_level,
    level_keys,
    parse_query,
    results_table,
)
from ._tls import tls_context
from ._ul import (
    ABORT,
    APPLICATION_CONTEXT,
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    ASSOCIATE_RQ,
    P_DATA,
    RELEASE_RP,
    RELEASE_RQ,
    AssociateAccept,
    AssociateRequest,
    Connection,
    accept_association,
    negotiate_contexts,
    open_association,
    request_association,
)
from .scu import iter_find

__all__ = [
    "ABORT",
    "APPLICATION_CONTEXT",
    "ASSOCIATE_AC",
    "ASSOCIATE_RJ",
    "ASSOCIATE_RQ",
    "C_CANCEL_RQ",
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_FIND_RQ",
    "C_FIND_RSP",
    "C_GET_RQ",
    "C_GET_RSP",
    "C_MOVE_RQ",
    "C_MOVE_RSP",
    "C_STORE_RQ",
    "C_STORE_RSP",
    "LEVELS",
    "MODELS",
    "MODEL_UIDS",
    "P_DATA",
    "QR_SYNTAXES",
    "RELEASE_RP",
    "RELEASE_RQ",
    "VERIFICATION",
    "AssociateAccept",
    "AssociateRequest",
    "Connection",
    "Message",
    "Query",
    "accept_association",
    "c_cancel_rq",
    "c_echo_rq",
    "c_find_rq",
    "c_get_rq",
    "c_move_rq",
    "c_store_rq",
    "decode_command",
    "encode_command",
    "encode_identifier",
    "identifier",
    "identifier_header",
    "iter_find",
    "keys_at_level",
    "level_keys",
    "match_value",
    "negotiate_contexts",
    "open_association",
    "parse_query",
    "request_association",
    "response",
    "results_table",
    "status_category",
    "text",
    "tls_context",
    "us",
]
