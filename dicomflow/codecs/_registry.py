"""The decoder and encoder registries: which codec function handles which transfer syntax.

A codec module declares what it offers as data: a tuple ``DECODERS`` of :class:`Decoder` and/or a
tuple ``ENCODERS`` of :class:`Encoder` (and, for a syntax the standard table does not know, a
tuple ``SYNTAXES`` of :class:`~dicomflow.dicom.TransferSyntax`). Nothing is registered by
importing it; a :class:`Registry` is built from modules, and :func:`default_registry` builds the
one every caller uses from the codec modules of this package (each module of
``dicomflow.codecs`` that declares ``DECODERS`` or ``ENCODERS``), once per process.

Functions are named, not held: a registry entry names a function of its module, looked up when
it is called (so the codec's own imports happen on first use, as pydicom's plugins do).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np

from ..dicom import TRANSFER_SYNTAXES, TransferSyntax
from ..errors import ConfigError, EncodeError, PixelDataError
from ._format import PixelFormat

__all__ = ["Decoder", "Encoder", "Registry", "default_registry"]


@cache
def _installed(module: str) -> bool:
    return module in sys.modules or importlib.util.find_spec(module) is not None


def _function(module: str, name: str) -> Any:
    loaded = sys.modules.get(module)
    if loaded is None:
        loaded = importlib.import_module(module)
    return getattr(loaded, name)


@cache
def _condition(module: str, name: str, syntax: str) -> str | None:
    return _function(module, name)(syntax)


@dataclass(frozen=True)
class _Codec:
    name: str
    syntaxes: tuple[str, ...]
    function: str
    priority: int = 0
    requires: tuple[str, ...] = ()
    condition: str = ""
    module: str = field(default="", compare=False)

    def unavailable(self, syntax: str) -> str | None:
        """Why this codec cannot be used for ``syntax`` here (``None``: it can)."""
        missing = [m for m in self.requires if not _installed(m)]
        if missing:
            return f"package {missing[0]!r} is not installed"
        if self.condition:
            return _condition(self.module, self.condition, syntax)
        return None

    def available(self, syntax: str) -> bool:
        return self.unavailable(syntax) is None


@dataclass(frozen=True)
class Decoder(_Codec):
    """One decoding function of a codec module for some transfer syntaxes.

    Parameters
    ----------
    name : str
        The backend name callers choose it by (``PixelOptions(backend="imagecodecs")``).
    syntaxes : tuple of str
        Transfer Syntax UIDs it decodes.
    function : str
        Name of the module's function ``(data: bytes, fmt: PixelFormat) -> (ndarray, str)``:
        one frame's bytes (its fragments joined) to the array pydicom's ``pixel_array`` gives
        for it before any colour conversion, and the photometric interpretation it is in.
        ``fmt.transfer_syntax_uid`` is the syntax being decoded. A decoder may refuse a frame it
        does not handle by raising any exception (the next decoder is tried).
    priority : int
        Higher is tried first (measured speed: ``benchmarks/bench_pixels.py``).
    requires : tuple of str
        Modules it imports; a missing one makes it unavailable, with that reason.
    condition : str
        Name of a module function ``(syntax_uid) -> str | None`` saying why it cannot be used
        here beyond a missing module (``None``: it can); asked once per process.
    exact : bool
        Whether it gives pydicom's values exactly. With ``exact=True`` (the default of every
        caller) exact decoders are tried first.
    exact_only : bool
        Tried only when exact values are asked for: a restricted variant of another decoder
        whose one use is being exact (libjpeg-turbo on 8-bit grey JPEG).
    opt_in : bool
        Used only when asked for by name (``backend=...``), never as a default or fallback
        (the GPU decoder: a device is a choice the caller makes).
    batch : str
        Name of a module function ``(frames: list[bytes], fmt) -> list[(ndarray, str) |
        Exception]`` that decodes many frames of one format in one call (a GPU batch);
        :func:`~dicomflow.codecs.decode_frames` uses it when this backend is chosen.
    """

    exact: bool = True
    exact_only: bool = False
    opt_in: bool = False
    batch: str = ""

    def decode(self, data: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
        return _function(self.module, self.function)(data, fmt)

    def decode_batch(self, frames: list[bytes], fmt: PixelFormat) -> list[Any]:
        """Each frame's ``(array, photometric)``, or the exception that refused it (a decoder
        with a ``batch`` function only)."""
        return list(_function(self.module, self.batch)(frames, fmt))


@dataclass(frozen=True)
class Encoder(_Codec):
    """One encoding function of a codec module for some transfer syntaxes.

    ``function`` names ``(frame: ndarray, fmt: PixelFormat, options: Mapping) -> bytes``: one
    decoded frame (stored values, native byte order) to its encapsulated codestream;
    ``fmt.transfer_syntax_uid`` is the target syntax, the other fields describe the frame.
    ``accepts`` names ``(fmt) -> bool``: whether it stores such a frame exactly (every
    encoder of a syntax that accepts nothing of an image makes the syntax unable to hold it).
    The other parameters are those of :class:`Decoder`.
    """

    accepts: str = ""

    def encode(self, frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
        return _function(self.module, self.function)(frame, fmt, options)

    def takes(self, fmt: PixelFormat) -> bool:
        """Whether it stores frames of this format exactly."""
        return not self.accepts or bool(_function(self.module, self.accepts)(fmt))


def _module(entry: ModuleType | str) -> ModuleType:
    return importlib.import_module(entry) if isinstance(entry, str) else entry


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per process
class Registry:
    """Decoders and encoders per transfer syntax, and the syntaxes they are for.

    Build one with :meth:`from_modules`; :func:`default_registry` is the package's own.
    """

    decoders: tuple[Decoder, ...] = ()
    encoders: tuple[Encoder, ...] = ()
    syntaxes: Mapping[str, TransferSyntax] = field(default_factory=lambda: TRANSFER_SYNTAXES)
    _chains: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType | str]) -> Registry:
        """The registry of these codec modules (module objects or import names)."""
        decoders: list[Decoder] = []
        encoders: list[Encoder] = []
        syntaxes = dict(TRANSFER_SYNTAXES)
        for entry in modules:
            module = _module(entry)
            for ts in getattr(module, "SYNTAXES", ()):
                if ts.uid in TRANSFER_SYNTAXES:
                    raise ConfigError(f"{module.__name__}: {ts.uid} is already in the table")
                syntaxes[ts.uid] = ts
            decoders += [
                replace(d, module=module.__name__) for d in getattr(module, "DECODERS", ())
            ]
            encoders += [
                replace(e, module=module.__name__) for e in getattr(module, "ENCODERS", ())
            ]
        return cls(tuple(decoders), tuple(encoders), MappingProxyType(syntaxes))

    def with_modules(self, *modules: ModuleType | str) -> Registry:
        """This registry and more codec modules (tried in priority order with the others)."""
        extra = Registry.from_modules(modules)
        syntaxes = {**self.syntaxes, **extra.syntaxes}
        return Registry(
            self.decoders + extra.decoders,
            self.encoders + extra.encoders,
            MappingProxyType(syntaxes),
        )

    def syntax(self, uid_or_name: str | TransferSyntax) -> TransferSyntax | None:
        """The record of a UID, short name or keyword (``None`` when unknown)."""
        if isinstance(uid_or_name, TransferSyntax):
            return uid_or_name
        key = str(uid_or_name).strip().rstrip("\x00")
        found = self.syntaxes.get(key)
        if found is None:
            lowered = key.lower()
            for ts in self.syntaxes.values():
                if lowered in (ts.short_name.lower(), ts.keyword.lower()) and lowered:
                    return ts
        return found

    # -- decoders ------------------------------------------------------------------------------
    def decoder_chain(
        self, uid: str, exact: bool = True, backend: str | None = None
    ) -> tuple[Decoder, ...]:
        """The available decoders for ``uid``, in the order they are tried (opt-in ones only
        when ``backend`` names them)."""
        key = ("decode", uid, exact, backend)
        chain = self._chains.get(key)
        if chain is None:
            usable = [
                d
                for d in self.decoders
                if uid in d.syntaxes and (not d.opt_in or d.name == backend) and d.available(uid)
            ]
            if exact:
                usable.sort(key=lambda d: (not d.exact, -d.priority))
            else:
                usable = [d for d in usable if not d.exact_only]
                usable.sort(key=lambda d: -d.priority)
            chain = self._chains[key] = tuple(usable)
        return chain

    def encoder_chain(self, uid: str) -> tuple[Encoder, ...]:
        """Every registered encoder for ``uid`` (installed or not), fastest first."""
        key = ("encode", uid)
        chain = self._chains.get(key)
        if chain is None:
            found = sorted(
                (e for e in self.encoders if uid in e.syntaxes), key=lambda e: -e.priority
            )
            chain = self._chains[key] = tuple(found)
        return chain

    def report(self, kind: str = "decode") -> dict[str, dict[str, str]]:
        """For each syntax, each codec and whether it is usable (``"ok"`` or why not)."""
        codecs: tuple[_Codec, ...] = self.decoders if kind == "decode" else self.encoders
        if kind not in ("decode", "encode"):
            raise ConfigError(f"kind is 'decode' or 'encode', not {kind!r}")
        uids = list(dict.fromkeys(uid for c in codecs for uid in c.syntaxes))
        report: dict[str, dict[str, str]] = {}
        for uid in uids:
            entry: dict[str, str] = {}
            mine = [c for c in codecs if uid in c.syntaxes]
            mine.sort(key=lambda c: (not getattr(c, "exact", True), -c.priority))
            for codec in mine:
                reason = codec.unavailable(uid) or "ok"
                if entry.get(codec.name) != "ok":  # one name, several entries: usable if one is
                    entry[codec.name] = reason
            report[uid] = entry
        return report


def _package_modules() -> list[str]:
    package = sys.modules[__package__]
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    return [f"{__package__}.{name}" for name in names if name.startswith("_")]


@cache
def default_registry() -> Registry:
    """The registry of dicomflow's own codec modules (built once per process)."""
    modules = [importlib.import_module(name) for name in _package_modules()]
    codec_modules = [m for m in modules if hasattr(m, "DECODERS") or hasattr(m, "ENCODERS")]
    return Registry.from_modules(codec_modules)


def check_backend(chain: tuple[Decoder, ...], backend: str | None, ts: TransferSyntax):
    """The chain narrowed to ``backend`` (an explicit choice is never silently replaced)."""
    if backend is None:
        return chain
    chosen = tuple(d for d in chain if d.name == backend)
    if not chosen:
        names = ", ".join(dict.fromkeys(d.name for d in chain)) or "none"
        raise PixelDataError(
            f"backend {backend!r} cannot decode {ts.uid} ({ts.name}); available here: {names}"
        )
    return chosen


def no_encoder(ts: TransferSyntax, wanted: Iterable[str]) -> EncodeError:
    names = " or ".join(dict.fromkeys(wanted))
    if not names:
        return EncodeError(f"dicomflow has no encoder for {ts.name}")
    return EncodeError(f"no encoder for {ts.name} is installed: install {names}")
