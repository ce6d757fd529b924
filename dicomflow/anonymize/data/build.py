"""Rebuild the de-identification package data from the shared standard tables.

Run by hand from the repository root when ``../shared/standard`` changes::

    .venv/bin/python dicomflow/anonymize/data/build.py [PATH/TO/shared/standard]

It copies the PS3.15 tables verbatim (Table E.1-1, E.1-1a, E.3.10-1, E.3.4-1, CID 7050 and the
SOP Class to IOD table) and reduces the PS3.3 attribute Types (714,001 rows at all depths) to what
the compound action codes of Table E.1-1 and the engine's default for unlisted attributes need:

``iod-compound-types.csv.gz``
    ``ciod, path, module, usage, type``: one row per IOD, attribute path and module for every
    attribute whose Basic Profile code is compound (``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D``,
    ``X/Z/U*``), with the strictest Type the module gives that path (``1C`` counts as ``1``,
    ``2C`` as ``2``).
``iod-unlisted-types.csv.gz``
    ``ciod, tag, type``: for public attributes Table E.1-1 does not list whose VR (from pydicom's
    data dictionary) is free text, a name or a date/time (LO, LT, SH, ST, UT, UC, UR, PN, AE, AS,
    DA, DT, TM), the strictest Type (``1`` or ``2``) any module of the IOD gives them at any
    nesting level. The engine's default for such attributes is removal unless this Type asks
    for a dummy (1) or an empty value (2).
``iod-module-evidence.csv.gz``
    ``ciod, module, usage, evidence``: for each optional (``U``) or conditional (``C``) module
    named above, the top-level tags that only that module of the IOD defines. An instance that
    carries one of them carries the module; an empty ``evidence`` means the module cannot be told
    apart and is taken as present.

The package never reads ``../shared`` at run time; ``tests/anonymize/test_tables.py`` checks that
these files still equal what this script builds.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent

COPIED = (
    "ps3.15-e.1-1.csv",
    "ps3.15-e.1-1a.csv",
    "ps3.15-e.3.10-1.csv",
    "ps3.15-e.3.4-1.csv",
    "cid7050.csv",
    "sop-class-to-iod.csv",
)
TYPES_SOURCE = "ps3.3-iod-attribute-types-full.csv.gz"
COMPOUND_TYPES = "iod-compound-types.csv.gz"
MODULE_EVIDENCE = "iod-module-evidence.csv.gz"
UNLISTED_TYPES = "iod-unlisted-types.csv.gz"
UNLISTED_VRS = frozenset(
    {"LO", "LT", "SH", "ST", "UT", "UC", "UR", "PN", "AE", "AS", "DA", "DT", "TM"}
)

_STRICTNESS = {"1": "1", "1C": "1", "2": "2", "2C": "2", "3": "3"}


def default_standard_dir() -> Path:
    """``shared/standard`` beside the repository (``<repo>/../shared/standard``)."""
    return HERE.parents[3] / "shared" / "standard"


def _profile_tags(standard_dir: Path) -> tuple[set[str], set[str]]:
    """Tags as written in Table E.1-1: all of them, and those with a compound Basic code."""
    with open(standard_dir / "ps3.15-e.1-1.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["tag"] for r in rows}, {r["tag"] for r in rows if "/" in r["basic_profile"]}


def _is_unlisted_text(tag: str, cache: dict[str, bool]) -> bool:
    """Whether pydicom's dictionary gives ``tag`` (``(gggg,eeee)``) a text/name/date VR."""
    found = cache.get(tag)
    if found is None:
        from pydicom.datadict import dictionary_VR

        found = False
        if "x" not in tag.lower():
            try:
                found = dictionary_VR(int(tag[1:5] + tag[6:10], 16)) in UNLISTED_VRS
            except KeyError:
                found = False
        cache[tag] = found
    return found


def build_tables(standard_dir: Path) -> dict[str, str]:
    """Return the text of the three reduced Type tables, keyed by file name."""
    listed, wanted = _profile_tags(standard_dir)
    text_cache: dict[str, bool] = {}
    unlisted: dict[tuple[str, str], str] = {}
    strictest: dict[tuple[str, str, str], tuple[str, str]] = {}
    top_level: dict[tuple[str, str], set[str]] = defaultdict(set)
    usage_of: dict[tuple[str, str], str] = {}
    with gzip.open(standard_dir / TYPES_SOURCE, "rt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ciod, module, path = row["ciod"], row["module"], row["path"]
            usage_of[(ciod, module)] = row["usage"]
            if ">" not in path:
                top_level[(ciod, module)].add(path)
            last = path.rsplit(">", 1)[-1]
            kind = _STRICTNESS[row["type"]]
            if kind != "3" and last not in listed and _is_unlisted_text(last, text_cache):
                old_kind = unlisted.get((ciod, last))
                if old_kind is None or kind < old_kind:
                    unlisted[(ciod, last)] = kind
            if last not in wanted:
                continue
            key = (ciod, path, module)
            old = strictest.get(key)
            if old is None or kind < old[1]:
                strictest[key] = (row["usage"], kind)

    types = io.StringIO()
    out = csv.writer(types, lineterminator="\n")
    out.writerow(["ciod", "path", "module", "usage", "type"])
    for (ciod, path, module), (usage, kind) in sorted(strictest.items()):
        out.writerow([ciod, path, module, usage, kind])

    modules_of: dict[str, list[str]] = defaultdict(list)
    for ciod, module in usage_of:
        modules_of[ciod].append(module)
    needed = sorted({(c, m) for c, _, m in strictest if usage_of[(c, m)] != "M"})
    evidence = io.StringIO()
    out = csv.writer(evidence, lineterminator="\n")
    out.writerow(["ciod", "module", "usage", "evidence"])
    for ciod, module in needed:
        own = top_level[(ciod, module)]
        others = set().union(*(top_level[(ciod, m)] for m in modules_of[ciod] if m != module))
        unique = own - others
        if not unique:
            mandatory = set().union(
                *(top_level[(ciod, m)] for m in modules_of[ciod] if usage_of[(ciod, m)] == "M")
            )
            unique = own - mandatory
        out.writerow([ciod, module, usage_of[(ciod, module)], " ".join(sorted(unique))])
    loose = io.StringIO()
    out = csv.writer(loose, lineterminator="\n")
    out.writerow(["ciod", "tag", "type"])
    for (ciod, tag), kind in sorted(unlisted.items()):
        out.writerow([ciod, tag, kind])
    return {
        COMPOUND_TYPES: types.getvalue(),
        MODULE_EVIDENCE: evidence.getvalue(),
        UNLISTED_TYPES: loose.getvalue(),
    }


def main(argv: list[str]) -> int:
    standard_dir = Path(argv[1]) if len(argv) > 1 else default_standard_dir()
    for name in COPIED:
        shutil.copyfile(standard_dir / name, HERE / name)
    for name, text in build_tables(standard_dir).items():
        (HERE / name).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    print(f"wrote {len(COPIED) + 3} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
