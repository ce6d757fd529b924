"""The bottom layer: what every package shares about the DICOM encoding.

Nothing here imports anything of dicomflow above :mod:`dicomflow.errors`; everything above uses
it. It holds:

- the header parser (:func:`parse_header`: one pass over the encoded elements, no pydicom
  objects) and the element value conversion to typed Arrow columns (:func:`column_array`);
- the catalog's columns and their Arrow types from the data dictionary (:func:`resolve_columns`,
  :func:`catalog_schema`);
- the Part 10 encoder (:func:`encode_file`, :func:`encode_part10`) and File Meta Information built
  in one place with one implementation identity (:func:`file_meta`, :func:`file_meta_bytes`);
- atomic file writing, local and through fsspec (:func:`atomic_write`), and safe path
  components (:func:`safe_component`);
- the UID rule of PS3.5 9.1 (:func:`uid_problem`), checked before a UID names a file;
- the transfer syntax table, package data read once (:data:`TRANSFER_SYNTAXES`,
  :func:`transfer_syntax`: UID, names, encoding and what each can hold).

This is an internal layer: its names are stable for dicomflow's own packages and for extension
authors, but are not part of ``import dicomflow``'s user API.
"""

from ._encode import DeidentifiedDataset, Fallback, Writer, encode_file
from ._files import (
    TMP_SUFFIX,
    CollisionError,
    atomic_path,
    atomic_write,
    is_url,
    join,
    put_url,
    remove_stale_temporaries,
    replace_url,
    safe_component,
    temporary_token,
)
from ._header import (
    ALL_VRS,
    LONG_VRS,
    MAX_INFLATED,
    MAX_NESTING,
    NOT_DICOM,
    SCANNER_CORE,
    NeedMore,
    ParsedHeader,
    Unsupported,
    compiled_core,
    parse_header,
    top_values,
    walk,
    walk_to_end,
)
from ._part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    checked_uid,
    encode_part10,
    file_meta,
    file_meta_bytes,
    header_uids,
    meta_uids,
    read_meta,
    sop_uids,
    split_part10,
    uid_of,
)
from ._schema import (
    DEFAULT_COLUMNS,
    FIXED_SCHEMA,
    ColumnSpec,
    catalog_schema,
    private_column,
    resolve_columns,
    specs_for_tags,
)
from ._syntaxes import (
    TRANSFER_SYNTAXES,
    TransferSyntax,
    native_syntax,
    parse_syntaxes,
    transfer_syntax,
)
from ._uids import MAX_UID_LENGTH, uid_problem
from ._values import (
    column_array,
    encodings_of,
    parse_da,
    parse_ds,
    parse_dt,
    parse_is,
    parse_tm,
    to_text,
)

__all__ = [
    "ALL_VRS",
    "DEFAULT_COLUMNS",
    "FIXED_SCHEMA",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "LONG_VRS",
    "MAX_INFLATED",
    "MAX_NESTING",
    "MAX_UID_LENGTH",
    "NOT_DICOM",
    "SCANNER_CORE",
    "compiled_core",
    "TMP_SUFFIX",
    "TRANSFER_SYNTAXES",
    "CollisionError",
    "ColumnSpec",
    "DeidentifiedDataset",
    "Fallback",
    "NeedMore",
    "ParsedHeader",
    "TransferSyntax",
    "Unsupported",
    "Writer",
    "atomic_path",
    "atomic_write",
    "catalog_schema",
    "checked_uid",
    "column_array",
    "encode_file",
    "encode_part10",
    "encodings_of",
    "file_meta",
    "file_meta_bytes",
    "header_uids",
    "is_url",
    "join",
    "meta_uids",
    "native_syntax",
    "parse_da",
    "parse_ds",
    "parse_dt",
    "parse_header",
    "parse_is",
    "parse_syntaxes",
    "parse_tm",
    "private_column",
    "put_url",
    "read_meta",
    "remove_stale_temporaries",
    "replace_url",
    "resolve_columns",
    "safe_component",
    "temporary_token",
    "sop_uids",
    "specs_for_tags",
    "split_part10",
    "to_text",
    "top_values",
    "transfer_syntax",
    "uid_of",
    "uid_problem",
    "walk",
    "walk_to_end",
]
