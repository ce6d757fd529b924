"""The ``Deidentify`` pipeline stage: PS3.15 Annex E on every instance, failing closed.

>>> import dicomflow as dfl                                         # doctest: +SKIP
>>> run = (dfl.pipeline(dfl.scan("export/"))
...        | Deidentify(secret_file="project.key", options=["retain-safe-private"])
...       ).write(dfl.writers.Part10Folder("share/"))                # doctest: +SKIP
>>> report = run.execute(manifest="private/manifests")              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..pipeline import Instance
from ._burned import PixelReport
from ._crosswalk import merge_crosswalk, output_root_above, write_part
from ._engine import Deidentifier
from ._fast import FastDeidentifier
from ._keys import Crosswalk, load_lookup
from ._options import DeidOptions
from ._pixels import PixelRules
from ._recipe import Recipe

__all__ = ["Deidentify", "fingerprint", "read_secret"]

_FINGERPRINT_MESSAGE = b"dicomflow config"


def fingerprint(secret: bytes, message: bytes = _FINGERPRINT_MESSAGE) -> str:
    """A keyed fingerprint of ``secret`` (16 hex digits): tells secrets apart, reveals nothing.

    Examples
    --------
    >>> fingerprint(b"k" * 32) == fingerprint(b"k" * 32) != fingerprint(b"j" * 32)
    True
    """
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:16]


def read_secret(
    secret: bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    secret_env: str | None = None,
) -> bytes:
    """The project secret from exactly one of: a value, a file, an environment variable.

    A file's or variable's text is used without its leading and trailing white space.

    Raises
    ------
    ConfigError
        None or several sources given, an unreadable file, an unset variable.
    """
    given = [s for s in (secret, secret_file, secret_env) if s is not None]
    if len(given) != 1:
        raise ConfigError(
            "de-identification needs exactly one of secret=, secret_file= or secret_env= "
            f"(got {len(given)})"
        )
    if secret is not None:
        return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if secret_file is not None:
        try:
            return Path(secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"the secret file {secret_file} cannot be read: {exc}") from exc
    value = os.environ.get(str(secret_env))
    if not value:
        raise ConfigError(f"the environment variable {secret_env} holding the secret is not set")
    return value.strip().encode("utf-8")


def _recipe(recipe: object) -> Recipe | None:
    """A recipe given as an object, a file path or a table (a pipeline file's ``recipe``)."""
    if recipe is None:
        return None
    if isinstance(recipe, str | os.PathLike):
        recipe = Recipe.load(recipe)
    elif isinstance(recipe, Mapping):
        recipe = Recipe.from_config(recipe)
    elif not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe must be a Recipe, a recipe file or a table, not {recipe!r}")
    return recipe if recipe.rules or recipe.date_shift_days is not None else None


def _lookup_fingerprint(secret: bytes, lookup: Mapping[str, Mapping[str, str]]) -> str:
    canonical = json.dumps({k: dict(v) for k, v in lookup.items()}, sort_keys=True)
    return fingerprint(secret, b"lookup\0" + canonical.encode("utf-8"))


@dataclass(frozen=True, repr=False)
class Deidentify:
    """Stage: de-identify each instance by PS3.15 Annex E (Basic Profile plus Options).

    The instance's dataset is replaced by its de-identified copy (new UIDs, new File Meta
    Information whose Media Storage SOP Instance UID is the new SOP Instance UID), and the count
    of each action goes into ``instance.counts`` (``deid.X``, ``deid.Z``, ...), hence into the
    manifest. An instance that cannot be de-identified with certainty raises
    `DeidentificationError`, which the pipeline records as a failure with the reason; nothing
    of it is written.

    Parameters
    ----------
    secret, secret_file, secret_env
        The project secret (at least 16 bytes), given directly, as a file or as the name of an
        environment variable: exactly one. It keys every UID, pseudonym and date shift, is read
        once where the stage is built and travels to workers inside the pickled stage; it is
        never in ``repr``, `config`, the manifest or the outputs.
    options
        Option names (``"retain-safe-private"``, ...; see ``dicomflow.anonymize.OPTIONS``) or a
        `DeidOptions`.
    lookup
        A CSV or Parquet lookup table (see `load_lookup`), or a mapping ``keyword ->
        {original: replacement}``, overriding derived values (e.g. study subject IDs).
    crosswalk
        Path of a Parquet file to receive the ``(keyword, original, replacement)`` pairs, apart
        from the shared output: each instance writes a part under ``<crosswalk>.parts/``, and
        `merge_crosswalk` (the ``deid`` command calls it) folds them into the file. A crosswalk
        inside a folder that looks like a dicomflow output fails every instance.
    date_shift_days
        Inclusive range of the per-patient date shift (Modified Dates option, ``shift``
        rules); default the recipe's ``date-shift-days``, else ``(-3650, 0)``.
    pixel_rules
        A CSV pixel rule table for Clean Pixel Data (default: the one shipped with dicomflow).
    recipe
        Per-attribute rules above the Options: a `Recipe`, the path of a TOML recipe file, or
        a ``[recipe]`` table (see `Recipe` for the precedence).
    allow_identifying
        Let the recipe keep attributes the profile does not keep; they are recorded in each
        output's De-identification Method and as ``deid.retained.<attribute>`` counts in the
        manifest. Without it (or the rule's own ``allow-identifying``), building the stage
        raises `ConfigError` naming them.
    burned_in_text
        With Clean Pixel Data, what to do with burned-in text OCR finds: ``"blank"`` it
        (default) or ``"quarantine"`` the instance (fail it with the reason). What OCR found
        and still reads after blanking goes into ``instance.counts`` (``ocr.*``).

    Examples
    --------
    >>> stage = Deidentify(secret=b"a project secret of 32 bytes....", options=["retain-uids"])
    >>> stage
    Deidentify(options=('retain-uids',), secret=<hidden>)
    >>> stage.config()["secret_fingerprint"] == stage.fingerprint
    True
    """

    secret: bytes | str | None = field(default=None, compare=False)
    secret_file: str | None = None
    secret_env: str | None = None
    options: Iterable[str] | DeidOptions = ()
    lookup: str | Mapping[str, Mapping[str, str]] | None = None
    crosswalk: str | None = None
    date_shift_days: tuple[int, int] | None = None
    pixel_rules: str | None = None
    recipe: Recipe | str | os.PathLike[str] | Mapping[str, Any] | None = None
    allow_identifying: bool = False
    burned_in_text: str = "blank"
    name: str = "deidentify"
    _engine: Deidentifier = field(init=False, compare=False)
    _secret: bytes = field(init=False, compare=False)
    _state: dict[str, Any] = field(init=False, compare=False)
    _fast: FastDeidentifier = field(init=False, compare=False)

    def __post_init__(self) -> None:
        secret = read_secret(self.secret, self.secret_file, self.secret_env)
        recipe = _recipe(self.recipe)
        explicit = self.date_shift_days
        if isinstance(self.options, DeidOptions):
            options = self.options
        else:
            if isinstance(self.options, str):
                raise ConfigError("options must be a list of option names, not one string")
            options = DeidOptions.from_names(self.options)
        if not isinstance(self.allow_identifying, bool):
            raise ConfigError("allow_identifying must be True or False")
        object.__setattr__(self, "recipe", recipe)
        object.__setattr__(self, "options", options.names)
        if self.secret_file is not None:
            object.__setattr__(self, "secret_file", os.fspath(self.secret_file))
        if self.crosswalk is not None:
            object.__setattr__(self, "crosswalk", os.fspath(self.crosswalk))
        if self.pixel_rules is not None:
            object.__setattr__(self, "pixel_rules", os.fspath(self.pixel_rules))
        if isinstance(self.lookup, str | os.PathLike):
            lookup: Mapping[str, Mapping[str, str]] | None = load_lookup(self.lookup)
            object.__setattr__(self, "lookup", os.fspath(self.lookup))
        else:
            lookup = self.lookup
        rules = PixelRules.load(self.pixel_rules) if options.clean_pixel_data else None
        engine = Deidentifier(
            secret, options, lookup=lookup, pixel_rules=rules, recipe=recipe,
            allow_identifying=self.allow_identifying, burned_in_text=self.burned_in_text,
            date_shift_days=explicit,
        )  # fmt: skip
        object.__setattr__(self, "_engine", engine)
        # the range in force, as the engine settles it (the recipe is kept as the user wrote it)
        object.__setattr__(self, "date_shift_days", engine.options.date_shift_days)
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "_state", {})
        object.__setattr__(self, "_fast", FastDeidentifier(engine))

    # -- description --------------------------------------------------------------------------

    @property
    def deid_options(self) -> DeidOptions:
        """The options in force, as a `DeidOptions`."""
        return self._engine.options

    @property
    def engine(self) -> Deidentifier:
        """The `Deidentifier` this stage runs (e.g. for ``verify`` or a dry run)."""
        return self._engine

    def uid(self, original: str) -> str:
        """The UID this stage gives the UID ``original`` (see `Deidentifier.uid`)."""
        return self._engine.uid(original)

    @property
    def fingerprint(self) -> str:
        """Keyed fingerprint of the secret: a different secret gives a different one."""
        return fingerprint(self._secret)

    def __repr__(self) -> str:
        return f"Deidentify(options={self.options!r}, secret=<hidden>)"

    def config(self) -> dict[str, Any]:
        """What the outputs depend on, for the manifest and the config hash; no secret in it."""
        config: dict[str, Any] = {
            "type": "deidentify",
            "options": list(self.deid_options.names),
            "date_shift_days": list(self.deid_options.date_shift_days),
            "secret_fingerprint": self.fingerprint,
        }
        if self.secret_file is not None:
            config["secret_file"] = self.secret_file
        if self.secret_env is not None:
            config["secret_env"] = self.secret_env
        lookup = self._engine._keys.lookup
        if lookup:
            if isinstance(self.lookup, str):
                config["lookup"] = self.lookup
            config["lookup_fingerprint"] = _lookup_fingerprint(self._secret, lookup)
        if self.crosswalk is not None:
            config["crosswalk"] = self.crosswalk
        if self.deid_options.clean_pixel_data:
            rules = self._engine.pixel_rules
            config["pixel_rules"] = self.pixel_rules or "builtin"
            config["pixel_rules_sha256"] = rules.fingerprint
            config["burned_in_text"] = self.burned_in_text
        plan = self._engine._plan
        if isinstance(self.recipe, Recipe) and plan is not None:
            config["recipe"] = self.recipe.to_config()
            config["recipe_identifying"] = [target for target, _ in plan.identifying]
        if self.allow_identifying:
            config["allow_identifying"] = True
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Deidentify:
        """Build the stage from a pipeline file's table (``type = "deidentify"``).

        The secret must come from ``secret_file`` or ``secret_env``; a recorded
        ``secret_fingerprint`` must match it.
        """
        if "secret" in config:
            raise ConfigError(
                "a pipeline file must not hold the secret: use secret_file or secret_env"
            )
        known = {"secret_file", "secret_env", "options", "lookup", "crosswalk",
                 "date_shift_days", "pixel_rules", "recipe", "allow_identifying",
                 "burned_in_text", "name"}  # fmt: skip
        recorded = {"type", "secret_fingerprint", "lookup_fingerprint", "pixel_rules_sha256",
                    "recipe_identifying"}  # fmt: skip
        unknown = set(config) - known - recorded
        if unknown:
            raise ConfigError(f"deidentify: unknown settings {sorted(unknown)}")
        kwargs = {k: v for k, v in config.items() if k in known}
        if kwargs.get("pixel_rules") == "builtin":
            del kwargs["pixel_rules"]
        if "date_shift_days" in kwargs:
            kwargs["date_shift_days"] = tuple(kwargs["date_shift_days"])
        stage = cls(**kwargs)
        expected = config.get("secret_fingerprint")
        if expected is not None and expected != stage.fingerprint:
            raise ConfigError(
                "the secret differs from the one this pipeline was recorded with "
                f"(fingerprint {stage.fingerprint}, recorded {expected})"
            )
        return stage

    # -- running ------------------------------------------------------------------------------

    def __call__(self, instance: Instance) -> Instance:
        pairs = Crosswalk() if self.crosswalk is not None else None
        if pairs is not None:
            self._check_crosswalk_location()
        pixels = PixelReport() if self.deid_options.clean_pixel_data else None
        fast = None
        if pairs is None and pixels is None and not instance.parsed and instance.bytes_in_memory:
            fast = self._fast.deidentify(instance.raw)  # None: not for the byte path
        if fast is not None:  # the bytes the engine's output encodes to, without a Dataset
            instance.replace_bytes(fast.data, fast.top)
            counts = fast.counts
        else:
            out, counts = self._engine.deidentify(instance.dataset, crosswalk=pairs,
                                                  pixel_report=pixels)  # fmt: skip
            instance.dataset = out
        instance.counts.update({f"deid.{k}": v for k, v in counts.as_dict().items()})
        instance.counts.update({f"deid.retained.{k}": v for k, v in counts.retained})
        instance.counts.update({f"deid.masked.{k}": v for k, v in counts.masked})
        if pixels is not None:
            instance.counts.update(pixels.counts())
        instance.provenance.append(self.name)
        if pairs is not None and self.crosswalk is not None:
            name = fingerprint(self._secret, b"crosswalk part\0" + instance.uri.encode())
            write_part(self.crosswalk, name, pairs)
        return instance

    def _check_crosswalk_location(self) -> None:
        if self._state.get("crosswalk checked"):
            return
        root = output_root_above(str(self.crosswalk))
        if root is not None:
            raise ConfigError(
                f"the crosswalk {self.crosswalk} is inside {root}, which looks like a dicomflow "
                "output: keep the crosswalk in a separate, private location"
            )
        self._state["crosswalk checked"] = True

    def merge_crosswalk(self) -> int:
        """Fold the parts the workers wrote into the crosswalk file; the number of pairs."""
        if self.crosswalk is None:
            raise ConfigError("this stage has no crosswalk path")
        return merge_crosswalk(self.crosswalk)
