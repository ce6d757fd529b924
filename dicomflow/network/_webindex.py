"""The catalog behind ``dicomflow serve``: loaded once, sorted, and queried without file access.

A catalog (a Parquet file, a dataset folder, or a lake's records) becomes one polars frame
sorted by study, series and instance; study and series tables are derived from it once (one
row per study or series, with ``ModalitiesInStudy`` and the ``NumberOf...Related...`` counts),
so a study list is a filter over the study table, never over every instance. A series' rows are
one slice of the sorted frame, found through a dictionary built at load time.

QIDO-RS matching (PS3.18 8.3.4, PS3.4 C.2.2.2) is done with polars expressions: single values,
``\\``-separated UID lists, ``*``/``?`` wildcards (names case-insensitively), date and time
ranges ``A-B`` with either end open; a key the catalog has no column for matches everything.

:meth:`CatalogIndex.facets` counts the series a query matches per modality, body part,
manufacturer and study year, and the rows with errors, for the browse page.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag

from ..errors import ConfigError, SourceNotFoundError
from ._matching import temporal_value

__all__ = ["CatalogIndex", "Query", "load_catalog", "load_index"]

STUDY, SERIES, INSTANCE = "study", "series", "instance"

# the catalog's fixed columns under their DICOM keywords
_FIXED = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "number_of_frames": "NumberOfFrames",
}

# what each level returns without includefield (PS3.18 Tables 6.7.1-2, -2a, -2b)
DEFAULT_FIELDS = {
    STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "StudyInstanceUID", "StudyID",
        "PatientBirthDate", "PatientSex", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    SERIES: (
        "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
        "SeriesInstanceUID", "SeriesDate", "SeriesTime", "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ),
    INSTANCE: (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
        "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}  # fmt: skip

# attributes that belong to the study (its table holds the first instance's value)
_STUDY_KEYS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyID", "StudyDescription", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientWeight", "PatientSize", "InstitutionName",
)  # fmt: skip
_SERIES_KEYS = (
    "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "ProtocolName", "PatientPosition", "FrameOfReferenceUID",
    "Manufacturer", "ManufacturerModelName", "StationName",
)  # fmt: skip
_NOT_MATCHED = {"includefield", "limit", "offset", "fuzzymatching"}


def load_catalog(source: str | os.PathLike[str]) -> pl.DataFrame:
    """The catalog of ``source``: a lake (``_lake/`` records), a folder holding a catalog
    (a partitioned dataset or ``.parquet`` files), or one catalog Parquet file.

    Relative ``uri`` values are taken relative to the catalog's folder.
    """
    path = os.fspath(source)
    if not os.path.exists(path):
        raise SourceNotFoundError(f"{path!r} does not exist")
    if os.path.isdir(os.path.join(path, "_lake")):
        from ._records import read_catalog

        table: Any = read_catalog(path)
        base = path
    elif os.path.isdir(path):
        import pyarrow.dataset as pads

        files = sorted(
            glob.glob(os.path.join(glob.escape(path), "**", "*.parquet"), recursive=True)
        )
        files = [f for f in files if not os.path.basename(f).startswith("run-")]
        if not files:
            raise ConfigError(f"{path!r} holds no catalog (.parquet files) and is not a lake")
        table = pads.dataset(files, format="parquet", partitioning="hive").to_table()
        base = path
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        base = os.path.dirname(os.path.abspath(path))
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    missing = {"uri", "sop_instance_uid", "study_instance_uid", "series_instance_uid"} - set(
        df.columns
    )
    if missing:
        raise ConfigError(f"{path!r} is not a dicomflow catalog (no {sorted(missing)} column)")
    absolute = os.path.abspath(base)
    return df.with_columns(
        pl.when(pl.col("uri").str.starts_with("/") | pl.col("uri").str.contains("://"))
        .then(pl.col("uri"))
        .otherwise(pl.lit(absolute + os.sep) + pl.col("uri"))
        .alias("uri")
    )


def load_index(source: str | os.PathLike[str]) -> CatalogIndex:
    """Load a lake, a folder holding a catalog, or a catalog Parquet file, for serving."""
    return CatalogIndex(load_catalog(source))


@dataclass(frozen=True)
class Query:
    """One QIDO-RS request: the matching keys, the fields to return, the page."""

    keys: Mapping[str, str]
    include: tuple[str, ...] = ()
    include_all: bool = False
    limit: int | None = None
    offset: int = 0

    @classmethod
    def from_params(cls, items: Iterable[tuple[str, str]]) -> Query:
        """From URL query parameters (keywords or ``ggggeeee`` tags; repeated
        ``includefield`` values and comma lists are joined)."""
        keys: dict[str, str] = {}
        include: list[str] = []
        include_all = False
        limit: int | None = None
        offset = 0
        for name, value in items:
            if name == "includefield":
                for field in value.split(","):
                    if field == "all":
                        include_all = True
                    elif field:
                        include.append(_keyword(field))
            elif name == "limit":
                limit = _count(name, value)
            elif name == "offset":
                offset = _count(name, value)
            elif name not in _NOT_MATCHED:
                keys[_keyword(name)] = value
        return cls(keys, tuple(include), include_all, limit, offset)


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"{name}={value!r}: expected a whole number")
    return int(value)


def _keyword(name: str) -> str:
    """A keyword from a keyword or a tag (``0020000D``, ``(0020,000D)``)."""
    compact = re.sub(r"[(),]", "", name)
    if re.fullmatch(r"[0-9A-Fa-f]{8}", compact):
        keyword = keyword_for_tag(int(compact, 16))
        if keyword:
            return keyword
        raise ConfigError(f"{name!r}: not a tag of the data dictionary")
    if name in keyword_dict or name in _COMPUTED:
        return name
    raise ConfigError(f"{name!r}: not a DICOM keyword")


_COMPUTED = {
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
}


class CatalogIndex:
    """The catalog, sorted and summarised by study and series, held in memory for queries."""

    def __init__(self, catalog: pl.DataFrame) -> None:
        df = catalog.rename({k: v for k, v in _FIXED.items() if k in catalog.columns})
        for keyword in set(_FIXED.values()) - set(df.columns):
            df = df.with_columns(pl.lit(None, pl.String).alias(keyword))
        # only what a URL can name: rows with all three UIDs
        named = (
            pl.col("SOPInstanceUID").is_not_null()
            & pl.col("SeriesInstanceUID").is_not_null()
            & pl.col("StudyInstanceUID").is_not_null()
        )
        #: rows with an error that name no series (files that could not be read): not served
        unlisted = (
            df.filter(~named & pl.col("error").is_not_null()) if "error" in df.columns else None
        )
        self.unlisted_errors = 0 if unlisted is None else unlisted.height
        self._unlisted_reasons = [] if unlisted is None else _reasons(unlisted)
        df = df.filter(named)
        # one row per SOP Instance UID (the last one cataloged)
        df = df.unique("SOPInstanceUID", keep="last", maintain_order=True)
        order = ["StudyInstanceUID", "SeriesInstanceUID"]
        order += ["InstanceNumber"] if "InstanceNumber" in df.columns else []
        self.instances = df.sort([*order, "SOPInstanceUID"], nulls_last=True)
        self._series_slices = self._slices()
        self.series = self._series_table()
        self.studies = self._study_table()
        # for the facets, once: the rows with an error, and which series have an image
        error = pl.col("error") if "error" in df.columns else pl.lit(None, pl.String)
        self._failed = self.instances.filter(error.is_not_null()).select(
            "SeriesInstanceUID", error.alias("error")
        )
        image = (
            pl.col("pixel_offset").is_not_null() if "pixel_offset" in df.columns else pl.lit(False)
        )
        self._unimaged = (
            self.instances.group_by("SeriesInstanceUID", maintain_order=True)
            .agg((image & error.is_null()).any().alias("image"))
            .filter(~pl.col("image"))["SeriesInstanceUID"]
        )

    def _slices(self) -> dict[str, tuple[int, int]]:
        runs = (
            self.instances.with_row_index("_row")
            .group_by("SeriesInstanceUID", maintain_order=True)
            .agg(pl.col("_row").min().alias("first"), pl.len().alias("n"))
        )
        return {
            uid: (int(first), int(first) + int(n))
            for uid, first, n in runs.iter_rows()
            if uid is not None
        }

    def _series_table(self) -> pl.DataFrame:
        keys = [k for k in _SERIES_KEYS if k in self.instances.columns]
        return (
            self.instances.group_by("SeriesInstanceUID", maintain_order=True)
            .agg(
                pl.col("StudyInstanceUID").first(),
                *(pl.col(k).first() for k in keys if k != "SeriesInstanceUID"),
                *(pl.col(k).first() for k in _STUDY_KEYS if k in self.instances.columns
                  and k != "StudyInstanceUID"),
                pl.len().cast(pl.Int64).alias("NumberOfSeriesRelatedInstances"),
            )
        )  # fmt: skip

    def _study_table(self) -> pl.DataFrame:
        keys = [k for k in _STUDY_KEYS if k in self.instances.columns and k != "StudyInstanceUID"]
        modality = (
            [pl.col("Modality").drop_nulls().unique().sort().alias("ModalitiesInStudy")]
            if "Modality" in self.series.columns
            else []
        )
        return self.series.group_by("StudyInstanceUID", maintain_order=True).agg(
            *(pl.col(k).first() for k in keys),
            *modality,
            pl.len().cast(pl.Int64).alias("NumberOfStudyRelatedSeries"),
            pl.col("NumberOfSeriesRelatedInstances")
            .sum()
            .cast(pl.Int64)
            .alias("NumberOfStudyRelatedInstances"),
        )

    # -- lookups by UID (what WADO-RS URLs name) --------------------------------------------
    def series_rows(self, study: str, series: str) -> pl.DataFrame:
        """The instances of one series (empty when the study does not hold it)."""
        span = self._series_slices.get(series)
        if span is None:
            return self.instances.clear()
        rows = self.instances.slice(span[0], span[1] - span[0])
        if rows["StudyInstanceUID"][0] != study:
            return self.instances.clear()
        return rows

    def study_rows(self, study: str) -> pl.DataFrame:
        uids = self.series.filter(pl.col("StudyInstanceUID") == study)["SeriesInstanceUID"]
        parts = [self.series_rows(study, uid) for uid in uids]
        return pl.concat(parts) if parts else self.instances.clear()

    def instance_row(self, study: str, series: str, sop: str) -> dict[str, Any] | None:
        rows = self.series_rows(study, series).filter(pl.col("SOPInstanceUID") == sop)
        return rows.row(0, named=True) if rows.height else None

    # -- QIDO-RS ----------------------------------------------------------------------------
    def search(
        self,
        level: str,
        query: Query,
        *,
        study: str | None = None,
        series: str | None = None,
    ) -> list[dict[str, Any]]:
        """Matching rows of ``level`` as DICOM JSON objects."""
        return self.search_counted(level, query, study=study, series=series)[0]

    def search_counted(
        self,
        level: str,
        query: Query,
        *,
        study: str | None = None,
        series: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """:meth:`search`, and how many rows matched before ``offset`` and ``limit``."""
        if level == STUDY:
            table = self.studies
        elif level == SERIES:
            table = self.series
            if study is not None:
                table = table.filter(pl.col("StudyInstanceUID") == study)
        elif series is not None and study is not None:
            table = self.series_rows(study, series)
        elif study is not None:
            table = self.study_rows(study)
        else:
            table = self.instances
        if query.keys:
            table = table.filter(match(table, query.keys))
        matched = table.height
        table = table.slice(query.offset, query.limit)
        fields = list(DEFAULT_FIELDS[level]) + list(query.keys) + list(query.include)
        if query.include_all:
            fields += [c for c in table.columns if c in keyword_dict or c in _COMPUTED]
        if level != STUDY and "StudyInstanceUID" not in fields:
            fields.append("StudyInstanceUID")
        wanted = [f for f in dict.fromkeys(fields) if f in table.columns]
        return [to_json(row) for row in table.select(wanted).iter_rows(named=True)], matched

    # -- the browse page's facets ------------------------------------------------------------
    def facets(self, query: Query) -> dict[str, Any]:
        """Counts of the series matching ``query`` (QIDO keys, series level): per modality,
        body part, manufacturer and study year, the study date range, and the instances with
        an error. Each facet is counted under every key but its own, so that the other values
        of a facet stay in view while one is chosen."""
        series = self.series
        # one mask per key, evaluated once, then combined for each facet
        masks = {
            k: series.with_columns(match(series, {k: v}).alias("_m"))["_m"]
            for k, v in query.keys.items()
        }

        def matching(*without: str) -> pl.DataFrame:
            chosen = [m for k, m in masks.items() if k not in without]
            if not chosen:
                return series
            mask = chosen[0]
            for m in chosen[1:]:
                mask = mask & m
            return series.filter(mask)

        chosen = matching()
        out: dict[str, Any] = {
            "studies": chosen["StudyInstanceUID"].n_unique(),
            "series": chosen.height,
            "instances": int(chosen["NumberOfSeriesRelatedInstances"].sum()),
        }
        for name, keyword in _FACETS.items():
            out[name] = _counts(matching(keyword), keyword)
        dated = matching("StudyDate")
        out["dates"] = _date_range(dated)
        # the series of the page's "with errors" choice are named by UID: not under that key
        errors = matching("SeriesInstanceUID")["SeriesInstanceUID"]
        out["errors"] = self._errors(errors)
        out["no_thumbnail"] = self._no_thumbnail(chosen["SeriesInstanceUID"])
        return out

    def _errors(self, series: pl.Series) -> dict[str, Any]:
        failed = self._failed
        if series.len() < self.series.height:
            failed = failed.filter(pl.col("SeriesInstanceUID").is_in(series.implode()))
        named = failed["SeriesInstanceUID"].unique(maintain_order=True)
        return {
            "instances": failed.height,
            "series": named.head(_LISTED).to_list(),  # the first: the page lists 500
            "series_count": named.len(),
            "reasons": _reasons(failed),
            "unlisted": self.unlisted_errors,
            "unlisted_reasons": self._unlisted_reasons,
        }

    def _no_thumbnail(self, series: pl.Series) -> list[str]:
        """Series with no readable image (SR, presentation states, only failed instances):
        the first :data:`_LISTED`, in list order."""
        found = self._unimaged
        if series.len() < self.series.height:  # a filtered list: only its series
            found = found.filter(found.is_in(series.implode()))
        return found.head(_LISTED).to_list()


def _reasons(failed: pl.DataFrame) -> list[dict[str, Any]]:
    """The 20 most frequent error texts (their first 200 characters) and how many rows."""
    return (
        failed.group_by(pl.col("error").str.slice(0, 200).alias("reason"))
        .len("instances")
        .sort(["instances", "reason"], descending=[True, False])
        .head(20)
        .to_dicts()
    )


#: UIDs named in one facets answer at most (series with errors, series without an image)
_LISTED = 1000

_FACETS = {"modality": "Modality", "body_part": "BodyPartExamined",
           "manufacturer": "Manufacturer"}  # fmt: skip


def _counts(table: pl.DataFrame, keyword: str) -> list[dict[str, Any]]:
    """``[{"value", "series", "studies"}]``, most series first; a missing value is null."""
    if keyword not in table.columns:
        return []
    text = pl.col(keyword).cast(pl.String).replace("", None).alias("value")
    counted = table.group_by(text).agg(
        pl.len().alias("series"), pl.col("StudyInstanceUID").n_unique().alias("studies")
    )
    return counted.sort(["series", "value"], descending=[True, False], nulls_last=True).to_dicts()


def _date_range(table: pl.DataFrame) -> dict[str, Any]:
    """The first and last study date (``YYYYMMDD``) and the series per study year."""
    if "StudyDate" not in table.columns:
        return {"first": None, "last": None, "years": [], "undated": table.height}
    column = table["StudyDate"]
    if column.dtype == pl.String:
        dates = column.str.replace_all("-", "").replace("", None)
        first, last, year = dates.min(), dates.max(), dates.str.slice(0, 4)
    else:  # typed dates: compared as dates, only the two ends written as text
        dates = column
        first, last = (
            d.strftime("%Y%m%d") if isinstance(d, dt.date) else None
            for d in (dates.min(), dates.max())
        )
        year = dates.dt.year().cast(pl.String)
    years = year.drop_nulls().alias("value").to_frame().group_by("value").len("series")
    return {
        "first": first,
        "last": last,
        "years": years.sort("value").to_dicts(),
        "undated": dates.null_count(),
    }


def match(table: pl.DataFrame, keys: Mapping[str, str]) -> pl.Expr:
    """One polars expression true where a row matches every key."""
    expr = pl.lit(True)
    for keyword, value in keys.items():
        vr = _vr(keyword)
        if vr in ("DA", "TM", "DT"):
            temporal_value(keyword, vr, value)  # a bad value is refused where no column has it
        if keyword not in table.columns or value in ("", "*"):
            continue
        expr = expr & _match_one(keyword, table.schema[keyword], value)
    return expr


def _vr(keyword: str) -> str:
    if keyword in _COMPUTED:
        return "CS" if keyword == "ModalitiesInStudy" else "IS"
    try:
        return str(dictionary_VR(keyword_dict[keyword]))
    except KeyError:
        return "UN"


def _match_one(keyword: str, dtype: pl.DataType, value: str) -> pl.Expr:
    col = pl.col(keyword)
    vr = _vr(keyword)
    if vr in ("DA", "TM", "DT"):
        return _range(col, keyword, vr, dtype, value)
    values = value.split("\\")
    if isinstance(dtype, pl.List):
        return col.list.eval(_scalar(pl.element(), vr, values)).list.any().fill_null(False)
    return _scalar(col, vr, values, dtype).fill_null(False)


def _scalar(col: pl.Expr, vr: str, values: Sequence[str], dtype: Any = pl.String) -> pl.Expr:
    if dtype.is_numeric():
        try:
            numbers = [float(v) for v in values]
        except ValueError as exc:
            raise ConfigError(f"{values!r}: expected numbers") from exc
        return col.is_in(numbers)
    text = col.cast(pl.String)
    expr = pl.lit(False)
    for v in values:
        if "*" in v or "?" in v:
            flags = "(?i)" if vr == "PN" else ""
            pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in v)
            expr = expr | text.str.contains(f"{flags}^{pattern}$")
        elif vr == "PN":
            expr = expr | (text.str.to_lowercase() == v.lower())
        else:
            expr = expr | (text == v)
    return expr


_STRFTIME = {"DA": "%Y%m%d", "TM": "%H%M%S", "DT": "%Y%m%d%H%M%S"}


def _range(col: pl.Expr, keyword: str, vr: str, dtype: Any, value: str) -> pl.Expr:
    """DA/TM/DT matching (PS3.4 C.2.2.2.5): the value read as the C-FIND keys are
    (`temporal_value`: ISO or compact, ``A-B`` or ``A..B``), then compared as compact text
    for every column type, an upper end given to the day, minute or hour covering all of it."""
    value = temporal_value(keyword, vr, value)
    if not value:
        return pl.lit(True)
    if "-" in value:
        low, high = value.split("-", 1)
    else:
        low = high = value
    low, high = low.split(".")[0], high.split(".")[0]  # whole seconds: what the columns show
    if dtype == pl.String:  # a catalog that kept the text
        text = col.str.replace_all(r"[-:]", "")
    else:
        text = col.dt.strftime(_STRFTIME[vr])
    expr = pl.lit(True)
    if low:
        expr = expr & (text >= low)
    if high:
        expr = expr & (text.str.slice(0, len(high)) <= high)
    return expr.fill_null(False)


# -- DICOM JSON (PS3.18 F.2) ------------------------------------------------------------------
def to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog row (keyword -> value) as a DICOM JSON object, tags in ascending order."""
    out: dict[str, Any] = {}
    for keyword, value in row.items():
        tag = keyword_dict.get(keyword) or _COMPUTED_TAGS.get(keyword)
        if tag is None:
            continue
        vr = _vr(keyword)
        element: dict[str, Any] = {"vr": vr}
        values = _json_values(vr, value)
        if values:
            element["Value"] = values
        out[f"{tag:08X}"] = element
    return dict(sorted(out.items()))


_COMPUTED_TAGS = {
    "ModalitiesInStudy": 0x00080061,
    "NumberOfStudyRelatedSeries": 0x00201206,
    "NumberOfStudyRelatedInstances": 0x00201208,
    "NumberOfSeriesRelatedInstances": 0x00201209,
}


def _json_values(vr: str, value: Any) -> list[Any]:
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    out: list[Any] = []
    for item in items:
        if item is None or item == "":
            continue
        if vr == "PN":
            out.append({"Alphabetic": str(item)})
        elif isinstance(item, dt.datetime):
            out.append(item.strftime("%Y%m%d%H%M%S.%f"))
        elif isinstance(item, dt.date):
            out.append(item.strftime("%Y%m%d"))
        elif isinstance(item, dt.time):
            out.append(
                item.strftime("%H%M%S") + (f".{item.microsecond:06d}" if item.microsecond else "")
            )
        elif vr in ("IS", "SL", "SS", "UL", "US", "SV", "UV", "DS", "FL", "FD"):
            try:  # a catalog that kept a value as text ("12.0", "x") answers it as text
                out.append(float(item) if vr in ("DS", "FL", "FD") else int(item))
            except (TypeError, ValueError):
                out.append(str(item))
        elif isinstance(item, bytes):
            continue  # binary values are bulk data, not QIDO answers
        else:
            out.append(str(item))
    return out
