"""DICOMweb (PS3.18): QIDO-RS search to Arrow, WADO-RS into the lake or as lazy frames, STOW-RS.

>>> from dicomflow.network import DicomWeb
>>> web = DicomWeb("http://127.0.0.1:8042/dicom-web", token="...")       # doctest: +SKIP
>>> web.search("series", {"Modality": "CT"})                            # doctest: +SKIP
>>> web.retrieve_into("lake/", study_uid)                                # doctest: +SKIP
>>> frames = retrieve_frames(web, study_uid, series_uid, sop_uid, [1, 2])  # doctest: +SKIP

Built on ``requests`` rather than dicomweb-client: that client turns every retrieved instance
into a pydicom ``Dataset`` (decoding it), while a lake wants the bytes exactly as the server
sends them, streamed part by part. The multipart/related parsing and building here is all
this needs, so one fewer dependency; requests is already in dicomflow's ``http`` extra.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..errors import ConfigError
from ..pipeline import Instance, Output, RunContext
from ._errors import DicomWebError
from ._lake import Lake
from ._query import LEVEL_KEYS, check_level, keys_at_level, parse_query, results_table

__all__ = ["DicomWeb", "DicomWebOptions", "StowSink", "frames_array", "retrieve_frames"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_LEVEL_PATH = {"STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}


@dataclass(frozen=True)
class DicomWebOptions:
    """Where a DICOMweb service is and how to authenticate (never written to manifests).

    ``headers`` are sent with every request; ``token`` adds ``Authorization: Bearer <token>``;
    ``auth`` is (user, password) for HTTP basic authentication.
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    token: str | None = field(default=None, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)
    timeout: float = 60.0
    verify: bool | str = True
    chunk_size: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"DICOMweb url {self.url!r}: expected http:// or https://")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        headers = self.headers
        if isinstance(headers, Mapping):
            headers = tuple(headers.items())
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in headers))

    def config(self) -> dict[str, Any]:
        """JSON-able description without secrets."""
        return {"url": self.url, "headers": sorted(k for k, _ in self.headers)}


class DicomWeb:
    """A DICOMweb service: QIDO-RS, WADO-RS and STOW-RS over one pooled HTTP session."""

    def __init__(self, url: str | DicomWebOptions, **options: Any) -> None:
        self.options = url if isinstance(url, DicomWebOptions) else DicomWebOptions(url, **options)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<DicomWeb {self.options.url}>"

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        """One ``requests.Session`` per thread (sessions are not thread-safe)."""
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            s.headers.update(dict(self.options.headers))
            if self.options.token:
                s.headers["Authorization"] = f"Bearer {self.options.token}"
            if self.options.auth:
                user, password = self.options.auth
                s.auth = (user, password)
            s.verify = self.options.verify
            self._local.session = s
        return s

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        url = f"{self.options.url}/{path.lstrip('/')}"
        try:
            response = self.session.request(method, url, timeout=self.options.timeout, **kwargs)
        except requests.Timeout as exc:
            raise DicomWebError(f"{method} {url}: timed out") from exc
        except requests.RequestException as exc:
            raise DicomWebError(f"{method} {url}: {exc}") from exc
        if response.status_code >= 400:
            body = response.text[:300].strip()
            response.close()
            raise DicomWebError(
                f"{method} {url}: HTTP {response.status_code}" + (f": {body}" if body else ""),
                status_code=response.status_code,
            )
        return response

    def _multipart(self, path: str, accept: str) -> Iterator[bytes]:
        response = self._request("GET", path, headers={"Accept": accept}, stream=True)
        with response:
            content_type = response.headers.get("Content-Type", "")
            match = _BOUNDARY.search(content_type)
            if not content_type.lower().startswith("multipart/") or not match:
                if response.status_code == 204:
                    return
                yield response.content  # a single part sent without multipart framing
                return
            chunks = response.iter_content(chunk_size=self.options.chunk_size)
            yield from iter_multipart(chunks, match.group(1).encode("latin-1"))

    # -- QIDO-RS ---------------------------------------------------------------------------
    def search(
        self,
        level: str = "study",
        query: str | Mapping[str, Any] | None = None,
        *,
        study: str | None = None,
        series: str | None = None,
        columns: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
        fuzzy: bool = False,
    ) -> pa.Table:
        """QIDO-RS search at ``level`` (study, series, instance); a table typed like a catalog."""
        lvl = check_level(level)
        if lvl == "PATIENT":
            raise ConfigError("QIDO-RS has no patient level; search studies by PatientID")
        path = _LEVEL_PATH[lvl]
        if series and lvl == "IMAGE":
            if not study:
                raise ConfigError("series= needs study= as well")
            path = f"studies/{study}/series/{series}/instances"
        elif study and lvl != "STUDY":
            path = f"studies/{study}/{path}"
        keys = keys_at_level(parse_query(query), lvl)
        params: list[tuple[str, str]] = [(k, str(v)) for k, v in keys.items() if v is not None]
        wanted = [k for k in (*LEVEL_KEYS[lvl], *columns) if k not in keys]
        params += [("includefield", k) for k in dict.fromkeys(wanted)]
        params += [("includefield", k) for k, v in keys.items() if v is None]
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset is not None:
            params.append(("offset", str(offset)))
        if fuzzy:
            params.append(("fuzzymatching", "true"))
        response = self._request(
            "GET", path, params=params, headers={"Accept": "application/dicom+json"}
        )
        answers = json.loads(response.content) if response.content.strip() else []
        from pydicom import Dataset

        datasets = [Dataset.from_json(item) for item in answers]
        return results_table(lvl, datasets, extra=(*keys, *columns))

    # -- WADO-RS ---------------------------------------------------------------------------
    def iter_raw(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> Iterator[bytes]:
        """Stream the Part 10 bytes of a study, series or instance, as the server stores them."""
        path = f"studies/{study}"
        if series:
            path += f"/series/{series}"
            if instance:
                path += f"/instances/{instance}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        yield from self._multipart(path, accept)

    def retrieve_instance(self, study: str, series: str, instance: str) -> bytes:
        """One instance's Part 10 bytes."""
        for data in self.iter_raw(study, series, instance):
            return data
        raise DicomWebError(f"no instance {instance} in the answer", status_code=204)

    def iter_instances(self, study: str, series: str | None = None) -> Iterator[Instance]:
        """A study's or series' instances as pipeline :class:`~dicomflow.pipeline.Instance` s."""
        base = f"{self.options.url}/studies/{study}"
        for data in self.iter_raw(study, series):
            inst = Instance(uri=base)
            inst._raw = data
            yield inst

    def retrieve_into(
        self,
        lake: Lake | str,
        study: str,
        series: str | None = None,
        instance: str | None = None,
    ) -> tuple[int, int]:
        """WADO-RS a study, series or instance into ``lake``; returns (instances, bytes)
        landed."""
        from ..dicom import split_part10

        own = not isinstance(lake, Lake)
        target = lake if isinstance(lake, Lake) else Lake(lake)
        count = size = 0
        try:
            for data in self.iter_raw(study, series, instance):
                sop_class, sop, ts, body = split_part10(data)
                landed = target.receive(
                    sop_class=sop_class, sop_instance=sop, transfer_syntax=ts, dataset=body,
                    calling_ae="", source="wado-rs",
                )  # fmt: skip
                if landed.status == "failed":
                    raise DicomWebError(f"could not land {sop}: {landed.reason}")
                count += 1
                size += len(data)
        finally:
            if own:
                target.close()
            else:
                target.flush()
        return count, size

    def retrieve_frames(
        self,
        study: str,
        series: str,
        instance: str,
        frames: Sequence[int],
        *,
        transfer_syntax: str = "*",
    ) -> list[bytes]:
        """Frames (1-based numbers) as bytes: native pixels, or encoded as stored with ``*``."""
        if not frames:
            return []
        numbers = ",".join(str(int(f)) for f in frames)
        path = f"studies/{study}/series/{series}/instances/{instance}/frames/{numbers}"
        accept = (
            f'multipart/related; type="application/octet-stream"; transfer-syntax={transfer_syntax}'
        )
        parts = list(self._multipart(path, accept))
        if len(parts) != len(frames):
            raise DicomWebError(f"asked for {len(frames)} frames of {instance}, got {len(parts)}")
        return parts

    # -- STOW-RS ---------------------------------------------------------------------------
    def store(self, instances: Iterable[bytes], study: str | None = None) -> dict[str, Any]:
        """STOW-RS Part 10 objects in one request; returns the server's DICOM JSON answer.

        Raises :class:`DicomWebError` when the server lists failed instances.
        """
        boundary = uuid.uuid4().hex
        body = bytearray()
        n = 0
        for data in instances:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += data
            body += b"\r\n"
            n += 1
        body += f"--{boundary}--\r\n".encode()
        path = f"studies/{study}" if study else "studies"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        response = self._request("POST", path, data=bytes(body), headers=headers)
        answer = json.loads(response.content) if response.content.strip() else {}
        failed = answer.get("00081198", {}).get("Value", [])
        if failed:
            reasons = [str(item.get("00081197", {}).get("Value", ["?"])[0]) for item in failed]
            raise DicomWebError(
                f"STOW-RS: {len(failed)} of {n} instances failed (reasons {', '.join(reasons)})",
                status_code=response.status_code,
            )
        return answer


def iter_multipart(chunks: Iterable[bytes], boundary: bytes) -> Iterator[bytes]:
    """The bodies of a multipart stream, parsed as chunks arrive (RFC 2046)."""
    delimiter = b"--" + boundary
    marker = b"\r\n" + delimiter
    it = iter(chunks)
    buf = bytearray()

    def fill() -> bool:
        for chunk in it:
            if chunk:
                buf.extend(chunk)
                return True
        return False

    while (i := buf.find(delimiter)) < 0:
        if not fill():
            return
    del buf[: i + len(delimiter)]
    while True:
        while len(buf) < 2:
            if not fill():
                return
        if buf[:2] == b"--":
            return
        while (h := buf.find(b"\r\n\r\n")) < 0:
            if not fill():
                raise DicomWebError("multipart answer ends inside part headers")
        del buf[: h + 4]
        start = 0
        while (j := buf.find(marker, start)) < 0:
            start = max(0, len(buf) - len(marker))
            if not fill():
                raise DicomWebError("multipart answer ends inside a part")
        yield bytes(buf[:j])
        del buf[: j + len(marker)]


def retrieve_frames(
    web: DicomWeb | str,
    study: str,
    series: str,
    instance: str,
    frames: Sequence[int],
    *,
    transfer_syntax: str = "*",
) -> list[bytes]:
    """WADO-RS frames (1-based) of one instance; a picklable lazy chunk loader.

    ``web`` may be a :class:`DicomWeb` or its URL. With ``transfer_syntax="*"`` the frames
    come encoded as stored (JPEG, J2K...); ask ``"1.2.840.10008.1.2.1"`` for native pixels.
    """
    client = web if isinstance(web, DicomWeb) else DicomWeb(web)
    return client.retrieve_frames(study, series, instance, frames, transfer_syntax=transfer_syntax)


def _frame_chunk(
    web: DicomWeb, study: str, series: str, instance: str, number: int, shape: tuple, dtype: str
) -> Any:
    import numpy as np

    (data,) = retrieve_frames(web, study, series, instance, [number],
                              transfer_syntax="1.2.840.10008.1.2.1")  # fmt: skip
    arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    return arr[np.newaxis]


def frames_array(
    web: DicomWeb,
    study: str,
    series: str,
    instance: str,
    *,
    frames: int,
    rows: int,
    columns: int,
    dtype: str = "<u2",
    samples: int = 1,
) -> Any:
    """A dask array (frames, rows, columns[, samples]) of native pixels, one WADO-RS per chunk.

    Nothing is fetched until a chunk is computed; the server decodes (``transfer-syntax`` of
    explicit VR little endian). ``dtype`` follows Bits Allocated and Pixel Representation
    (``"<u2"``, ``"<i2"``, ``"u1"``...).
    """
    import dask
    import dask.array as da
    import numpy as np

    shape: tuple[int, ...] = (rows, columns) if samples == 1 else (rows, columns, samples)
    blocks = [
        da.from_delayed(
            dask.delayed(_frame_chunk)(web, study, series, instance, n + 1, shape, dtype),
            shape=(1, *shape),
            dtype=np.dtype(dtype),
        )
        for n in range(frames)
    ]
    return da.concatenate(blocks, axis=0)


@dataclass
class StowSink:
    """Sink: STOW-RS every instance (its bytes as they are, or re-encoded if a stage parsed it)."""

    web: DicomWeb | str
    name: str = "stow-rs"

    def __post_init__(self) -> None:
        if isinstance(self.web, str):
            self.web = DicomWeb(self.web)

    def config(self) -> dict[str, Any]:
        assert isinstance(self.web, DicomWeb)
        return {"type": "stow-rs", **self.web.options.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StowSink:
        """From a pipeline file: ``url``, optional ``token_env`` naming a variable with a token."""
        import os

        token = os.environ.get(config["token_env"]) if config.get("token_env") else None
        return cls(DicomWeb(config["url"], token=token) if token else DicomWeb(config["url"]))

    def open(self, context: RunContext) -> None:
        pass

    def write(self, instance: Instance) -> list[Output]:
        if instance._dataset is not None:
            from ..dicom import encode_part10

            data = encode_part10(instance.dataset)
        else:
            data = instance.raw
        assert isinstance(self.web, DicomWeb)
        self.web.store([data])
        sop = instance.sop_instance_uid or ""
        return [Output.of_bytes(self.name, f"{self.web.options.url}/instances/{sop}", data)]

    def close(self, context: RunContext | None = None, manifest: Any = None) -> None:
        pass
