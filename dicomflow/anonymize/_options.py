"""The Basic Application Level Confidentiality Profile and its Options, as a value object."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ..errors import ConfigError

__all__ = ["OPTIONS", "DeidOptions", "OptionSpec"]


@dataclass(frozen=True)
class OptionSpec:
    """One PS3.15 Option: its command-line name, Table E.1-1 column and CID 7050 code.

    Attributes
    ----------
    name : str
        The name used by dicomflow (``retain-safe-private``); the field of `DeidOptions` is the
        same name with ``_`` for ``-``.
    column : str or None
        The Table E.1-1 column of the Option (``rtn_safe_priv``), ``None`` for Clean Pixel Data,
        which has no column (it acts on the pixel data).
    code_value : str
        The CID 7050 code (scheme ``DCM``) recorded in De-identification Method Code Sequence.
    """

    name: str
    column: str | None
    code_value: str

    @property
    def field(self) -> str:
        """The `DeidOptions` field for this Option."""
        return self.name.replace("-", "_")


#: Every Option dicomflow implements, in the order of the Table E.1-1 columns.
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("retain-safe-private", "rtn_safe_priv", "113111"),
    OptionSpec("retain-uids", "rtn_uids", "113110"),
    OptionSpec("retain-device-identity", "rtn_dev_id", "113109"),
    OptionSpec("retain-institution-identity", "rtn_inst_id", "113112"),
    OptionSpec("retain-patient-characteristics", "rtn_pat_chars", "113108"),
    OptionSpec("retain-longitudinal-full-dates", "rtn_long_full_dates", "113106"),
    OptionSpec("retain-longitudinal-modified-dates", "rtn_long_modif_dates", "113107"),
    OptionSpec("clean-descriptors", "clean_desc", "113105"),
    OptionSpec("clean-structured-content", "clean_struct_cont", "113104"),
    OptionSpec("clean-graphics", "clean_graph", "113103"),
    OptionSpec("clean-pixel-data", None, "113101"),
)
_BY_NAME = {spec.name: spec for spec in OPTIONS}

#: CID 7050 code of the Basic Application Confidentiality Profile itself.
BASIC_PROFILE_CODE = "113100"


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 Annex E Options apply on top of the Basic Profile.

    The Basic Application Level Confidentiality Profile always applies; each ``True`` field
    selects one Option of PS3.15 E.3. The object is immutable, hashable and picklable, so it can
    be sent to worker processes and written into a manifest.

    Parameters
    ----------
    retain_safe_private, retain_uids, retain_device_identity, retain_institution_identity, \
retain_patient_characteristics, retain_longitudinal_full_dates, \
retain_longitudinal_modified_dates, clean_descriptors, clean_structured_content, \
clean_graphics, clean_pixel_data : bool
        The Options of PS3.15 E.3.1 to E.3.11 (Clean Recognizable Visual Features is not
        offered). The two Retain Longitudinal Temporal Information Options are mutually
        exclusive.
    date_shift_days : tuple of int
        Inclusive ``(low, high)`` range of the per-patient shift, in days, applied to dates by
        the Retain Longitudinal Temporal Information with Modified Dates Option. Default
        ``(-3650, 0)``: up to ten years into the past.

    Raises
    ------
    ConfigError
        Both longitudinal Options selected, or an empty or reversed date shift range.

    Examples
    --------
    >>> opts = DeidOptions.from_names(["retain-uids", "clean-descriptors"])
    >>> opts.names
    ('retain-uids', 'clean-descriptors')
    >>> DeidOptions().names
    ()
    """

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_longitudinal_full_dates: bool = False
    retain_longitudinal_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    clean_pixel_data: bool = False
    date_shift_days: tuple[int, int] = (-3650, 0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "date_shift_days" and not isinstance(value, bool):
                raise ConfigError(f"DeidOptions.{f.name} must be True or False, not {value!r}")
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise ConfigError(
                "retain-longitudinal-full-dates and retain-longitudinal-modified-dates are "
                "mutually exclusive (PS3.15 E.3.6): choose one"
            )
        try:
            low, high = (int(v) for v in self.date_shift_days)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"date_shift_days must be two integers (low, high), not {self.date_shift_days!r}"
            ) from exc
        if low > high:
            raise ConfigError(f"date_shift_days ({low}, {high}) is empty: low must be <= high")
        if max(abs(low), abs(high)) > 36500:
            raise ConfigError("date_shift_days must stay within 100 years (36500 days)")
        object.__setattr__(self, "date_shift_days", (low, high))

    @classmethod
    def from_names(cls, names: Iterable[str], **kwargs: object) -> DeidOptions:
        """Build options from Option names such as ``"retain-uids"``.

        Parameters
        ----------
        names : iterable of str
            Names from `OPTIONS` (``_`` and ``-`` are interchangeable, case is ignored).
        **kwargs
            Other fields, such as ``date_shift_days``.

        Raises
        ------
        ConfigError
            An unknown name, listing the known ones.
        """
        chosen: dict[str, object] = dict(kwargs)
        for raw in names:
            name = str(raw).strip().lower().replace("_", "-")
            spec = _BY_NAME.get(name)
            if spec is None:
                known = ", ".join(_BY_NAME)
                raise ConfigError(f"unknown de-identification option {raw!r}; known: {known}")
            chosen[spec.field] = True
        return cls(**chosen)  # type: ignore[arg-type]

    @property
    def names(self) -> tuple[str, ...]:
        """The selected Option names, in `OPTIONS` order."""
        return tuple(spec.name for spec in OPTIONS if getattr(self, spec.field))

    @property
    def selected(self) -> tuple[OptionSpec, ...]:
        """The selected Options."""
        return tuple(spec for spec in OPTIONS if getattr(self, spec.field))

    @property
    def columns(self) -> tuple[str, ...]:
        """The Table E.1-1 columns of the selected Options."""
        return tuple(s.column for s in self.selected if s.column is not None)

    @classmethod
    def from_codes(cls, codes: Iterable[str], **kwargs: object) -> DeidOptions:
        """Rebuild options from CID 7050 code values (as recorded in an output).

        Codes of Options dicomflow does not implement, and the Basic Profile code, are ignored.
        """
        by_code = {spec.code_value: spec.name for spec in OPTIONS}
        return cls.from_names([by_code[c] for c in codes if c in by_code], **kwargs)
