"""De-identification by DICOM PS3.15 Annex E: the Basic Application Level Confidentiality
Profile and its Options, keyed and deterministic, with a verifier.

The standard's tables (E.1-1, E.1-1a, E.3.10-1, E.3.4-1, CID 7050, and the PS3.3 attribute
Types the compound codes need) are package data; see ``docs/deidentification.md`` for the
conformance statement. `Deidentify` is the pipeline stage; `verify_folders` checks a whole
de-identified folder against its originals (``dicomflow verify-deid``). A `Recipe` layers
per-attribute rules (keep, remove, empty, replace, pseudonymise, shift) on the profile;
`convert_ctp` and `convert_deid` turn CTP DicomAnonymizer scripts and pydicom/deid recipes into
one.

Exceptions (drawn with the whole tree in :mod:`dicomflow.errors`): ``DeidentificationError``
for an instance that cannot be de-identified with certainty (``TextDetectionError`` when
burned-in text cannot be searched for: Tesseract missing), ``ConfigError`` for bad options,
secret or lookup table.

Clean Pixel Data blanks the regions of a pixel rule table and searches images that may show
text by OCR (`TextDetector`, `find_text`: Tesseract, Debian ``tesseract-ocr`` and
``tesseract-ocr-eng``).

Examples
--------
>>> from pydicom import Dataset
>>> from dicomflow.anonymize import Deidentifier, DeidOptions, verify
>>> ds = Dataset()
>>> ds.PatientName, ds.PatientID, ds.StudyDate = "Doe^Jane", "12345", "20240102"
>>> engine = Deidentifier(b"project secret, 32 bytes long...", DeidOptions())
>>> out, counts = engine.deidentify(ds)
>>> verify(ds, out)
[]
"""

from __future__ import annotations

from ._burned import BURNED_IN_TEXT_ACTIONS, PixelReport, decoded_frames, risk_reasons
from ._crosswalk import check_apart, merge_crosswalk, output_root_above, read_crosswalk
from ._engine import ActionCounts, Deidentifier
from ._errors import DeidentificationError
from ._explain import AttributeAction, explain
from ._keys import Crosswalk, Keyring, load_lookup
from ._ocr import TextBox, TextDetector, display_frame, find_text
from ._options import OPTIONS, DeidOptions, OptionSpec
from ._pixels import PixelRule, PixelRules
from ._policy import combine
from ._recipe import Recipe, RecipeRule, parse_target
from ._recipe_import import Conversion, Unmapped, convert_ctp, convert_deid
from ._stage import Deidentify, read_secret
from ._tables import (
    ProfileRow,
    action_codes,
    iod_for_sop_class,
    method_codes,
    parse_tag,
    profile_rows,
    safe_private,
)
from ._values import shift_date, shift_datetime
from ._verify import Finding, verify
from ._verify_folders import FolderFinding, FolderReport, verify_folders

__all__ = [
    "BURNED_IN_TEXT_ACTIONS",
    "OPTIONS",
    "ActionCounts",
    "AttributeAction",
    "Conversion",
    "Crosswalk",
    "DeidOptions",
    "DeidentificationError",
    "Deidentifier",
    "Deidentify",
    "Finding",
    "FolderFinding",
    "FolderReport",
    "Keyring",
    "OptionSpec",
    "PixelReport",
    "PixelRule",
    "PixelRules",
    "ProfileRow",
    "Recipe",
    "RecipeRule",
    "TextBox",
    "TextDetector",
    "Unmapped",
    "action_codes",
    "check_apart",
    "combine",
    "convert_ctp",
    "convert_deid",
    "decoded_frames",
    "display_frame",
    "explain",
    "find_text",
    "iod_for_sop_class",
    "load_lookup",
    "merge_crosswalk",
    "method_codes",
    "output_root_above",
    "parse_tag",
    "parse_target",
    "profile_rows",
    "read_secret",
    "read_crosswalk",
    "risk_reasons",
    "safe_private",
    "shift_date",
    "shift_datetime",
    "verify",
    "verify_folders",
]
