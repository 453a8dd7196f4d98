"""Read the ``net`` weights out of ``s2mel.pth`` without running any code stored in the file.

``s2mel.pth`` is a training save: ``{'net': {'cfm': sd, 'length_regulator': sd, 'gpt_layer': sd}, 'optimizer': ...,
'scheduler': ..., 'iters': ..., 'epoch': ...}``. Only ``net`` is needed. The training state next to it may
reference classes that ``torch.load(weights_only=True)`` refuses, so this module reads the zip archive with its
own restricted unpickler:

* ``find_class`` resolves only ``collections.OrderedDict``, torch's tensor/parameter rebuild functions and the
  storage type markers. Every other global becomes an inert :class:`_Opaque` stand-in that accepts and drops
  whatever the pickle hands it, so nothing from the file is ever imported or called (the same guarantee as
  ``weights_only=True``).
* Tensors are rebuilt lazily: unpickling only records (storage key, dtype, offset, size, stride). Afterwards
  only the tensors inside ``net`` are made, as views of a private memory map of the file (nothing is copied; the
  optimizer moments are never read).

A legacy (pre-zip, ``_use_new_zipfile_serialization=False``) torch file is read with
``torch.load(weights_only=True)`` instead; such a file must then hold nothing but plain containers and tensors.
"""

from __future__ import annotations

import collections
import logging
import pickle
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from core.checkpoints import CheckpointError

log = logging.getLogger(__name__)

_FIX = "Re-download the model files (python main.py models download) or check the model folder in Settings."

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Opaque:
    """Stand-in for any object the file references that we neither need nor trust. Swallows everything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _opaque_global(module: str, name: str) -> type:
    return type(f"Opaque[{module}.{name}]", (_Opaque,), {})


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> Any:
    if not isinstance(storage, _StorageRef):
        return _Opaque()
    return _LazyTensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.skipped: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        self.skipped.add(f"{module}.{name}")
        return _opaque_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            return _Opaque()
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            return _Opaque()
        key = key.decode() if isinstance(key, bytes) else str(key)
        return _StorageRef(key, storage_type.dtype, int(numel))


class _Archive:
    """Storages of a torch zip checkpoint, each a view of one private memory map of the file (as
    ``torch.load(mmap=True)`` makes them; see :mod:`core.checkpoints`): nothing is read until a tensor is used, and
    records that no tensor of ``net`` refers to are never read."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, path: Path) -> None:
        self.zf = zf
        self.prefix = prefix
        self.path = path
        self.cache: dict[str, torch.Tensor] = {}
        self.mapped = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where a stored record's bytes start in the file (after its local header, whose extra field may differ
        in length from the central directory's)."""
        fh = self.zf.fp
        if fh is None:
            raise ValueError("the archive is closed")
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"s2mel checkpoint {self.path}: record {info.filename} has a corrupt header. {_FIX}")
        name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
        return info.header_offset + 30 + name_len + extra_len

    def _read(self, info: zipfile.ZipInfo, nbytes: int) -> torch.Tensor:
        """The bytes of a compressed record (torch never writes one), read into memory."""
        raw = torch.empty(nbytes, dtype=torch.uint8)
        with cast(zipfile.ZipExtFile, self.zf.open(info)) as fh:  # mode "r" opens a ZipExtFile
            got = fh.readinto(raw.numpy().data)
        if got != nbytes:
            raise CheckpointError(f"s2mel checkpoint {self.path}: record {info.filename} is truncated. {_FIX}")
        return raw

    def storage(self, ref: _StorageRef) -> torch.Tensor:
        flat = self.cache.get(ref.key)
        if flat is None:
            name = f"{self.prefix}data/{ref.key}"
            item = torch.empty((), dtype=ref.dtype).element_size()
            nbytes = ref.numel * item
            try:
                info = self.zf.getinfo(name)
            except KeyError:
                raise CheckpointError(f"s2mel checkpoint {self.path} lacks tensor data record {name}. {_FIX}") from None
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"s2mel checkpoint {self.path}: record {name} holds {info.file_size} bytes, "
                    f"expected {nbytes}. {_FIX}"
                )
            start = self._data_offset(info) if info.compress_type == zipfile.ZIP_STORED else -1
            if start < 0 or start % item:  # compressed or misaligned: read a copy
                flat = self._read(info, nbytes).view(ref.dtype)
            elif start + nbytes > self.mapped.nbytes():
                raise CheckpointError(f"s2mel checkpoint {self.path}: record {name} is truncated. {_FIX}")
            else:
                record = self.mapped[start : start + nbytes]
                flat = torch.empty(0, dtype=ref.dtype).set_(record, 0, (ref.numel,), (1,))
            self.cache[ref.key] = flat
        return flat

    def tensor(self, lazy: _LazyTensor) -> torch.Tensor:
        flat = self.storage(lazy.storage)
        extent = lazy.offset + sum((n - 1) * s for n, s in zip(lazy.size, lazy.stride) if n > 0) + 1
        if any(n == 0 for n in lazy.size):
            extent = 0
        if extent > flat.numel():
            raise CheckpointError(f"s2mel checkpoint {self.path}: a tensor points past the end of its storage. {_FIX}")
        return torch.as_strided(flat, lazy.size, lazy.stride, lazy.offset)


def read_s2mel_net(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """``state['net']`` of an ``s2mel.pth`` as ``{sub-module name: {key: tensor}}``, leading ``module.`` stripped.

    Everything outside ``net`` (optimizer, scheduler, counters, EMA copies) is skipped unread. A file that is not
    a zip archive is taken for a legacy torch file and read with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"s2mel checkpoint not found: {path}. {_FIX}")
    if not zipfile.is_zipfile(path):
        return _read_legacy(path)
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
            if len(pickles) != 1:
                raise CheckpointError(f"s2mel checkpoint {path} has no single data.pkl record. {_FIX}")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = prefix + "byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder).decode().strip() != sys.byteorder:
                raise CheckpointError(f"s2mel checkpoint {path} was saved with a different byte order; not supported.")
            with zf.open(pickles[0]) as fh:
                unpickler = _RestrictedUnpickler(fh)
                state = unpickler.load()
            if unpickler.skipped:
                log.debug("s2mel checkpoint %s: skipped objects of %s", path, sorted(unpickler.skipped))
            archive = _Archive(zf, prefix, path)
            return _materialize_net(
                state, path, lambda v: archive.tensor(v) if isinstance(v, _LazyTensor) else None
            )
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"s2mel checkpoint {path} is truncated or corrupt ({exc}). {_FIX}") from exc


def _weights_only_detail(exc: Exception) -> str:
    """The one informative sentence of torch's long ``weights_only`` refusal (e.g. the unsupported global)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = " ".join(text.split()).split(". Please", 1)[0].strip().rstrip(".")
    return text or type(exc).__name__


def _read_legacy(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``net`` of a legacy (non-zip) torch file, via ``torch.load(weights_only=True)``."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head[:1] != b"\x80":  # every torch pickle starts with the pickle protocol opcode
        raise CheckpointError(
            f"s2mel checkpoint {path} is not a torch zip checkpoint nor a legacy torch file (truncated or corrupt?). "
            f"{_FIX}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files; all become one message
        raise CheckpointError(
            f"s2mel checkpoint {path} is not a torch zip checkpoint and does not load as a legacy torch file with "
            f"weights_only=True ({_weights_only_detail(exc)}); it is truncated or corrupt, or holds objects other "
            f"than weights. {_FIX}"
        ) from exc
    log.info("s2mel checkpoint %s: legacy (non-zip) torch file, read with torch.load(weights_only=True)", path)
    return _materialize_net(state, path, _plain_tensor)


def _plain_tensor(value: Any) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) else None


def _materialize_net(
    state: Any, path: Path, tensor: Callable[[Any], torch.Tensor | None]
) -> dict[str, dict[str, torch.Tensor]]:
    """``state['net']`` with every value turned into a tensor by ``tensor`` (None: the value is not a tensor)."""
    if not isinstance(state, Mapping) or not isinstance(state.get("net"), Mapping):
        raise CheckpointError(f"s2mel checkpoint {path} has no 'net' dict of weights (is it really s2mel.pth?). {_FIX}")
    net: dict[str, dict[str, torch.Tensor]] = {}
    for part, sd in state["net"].items():
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"s2mel checkpoint {path}: net['{part}'] is not a state dict. {_FIX}")
        tensors: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            got = tensor(value)
            if got is None:
                raise CheckpointError(
                    f"s2mel checkpoint {path}: net['{part}']['{key}'] is not a tensor ({type(value).__name__}). {_FIX}"
                )
            name = key[len("module.") :] if key.startswith("module.") else key
            tensors[name] = got
        net[str(part)] = tensors
    return net
