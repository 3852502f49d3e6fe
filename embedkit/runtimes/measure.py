"""``backend="auto"``: time every installed runtime on this machine and keep the fastest one whose
vectors are as good as fp32's; the decision is cached per machine and model.

The protocol (:data:`PROTOCOL`), a few seconds in all once the graphs are exported:

1. Sentences: :data:`PER_TOPIC` sentences of each of the twelve topics of embedkit's packaged demo
   corpus (``embedkit/data/demo_zh.jsonl``), so 144 short Chinese questions and statements.
2. Reference: fp32 torch (the sentence-transformers model as loaded). Every runtime is built and warmed
   up on a few sentences, then all encode the same sentences in batches of the encoder's batch size in
   :data:`ROUNDS` interleaved rounds (a burst of other load hits every runtime alike); the best
   round counts.
3. Quality, against the reference:
   * the cosine of each vector to its fp32 vector (the minimum must reach :data:`COSINE_FLOOR`);
   * rank agreement on a labelled sample that ships with the package: every pair of the sentences,
     labelled 1 when both come from the same topic; the Spearman correlation of the pair cosines with
     those labels (x100) must stay within ``bound`` points (default 0.5) of the reference's.
4. Choice: the fastest runtime that passes both; ties go to the earlier name in the registry order.
   A runtime that fails to build or run is skipped with a one-line reason; one slower than
   :data:`SLOW_CUT` x the reference is cut short (it cannot win); a bf16 runtime is not measured
   where its library reports no native bf16 (it emulates bf16, 3-100x slower than fp32). torch always
   qualifies.

The cache: one JSON per key in ``$XDG_CACHE_HOME/embedkit/runtimes/`` (:func:`cache_key`: CPU model
and kernel flags, thread count, device, model fingerprint, pooling and max length, library versions,
candidates, bound and protocol). An entry that is unreadable, malformed or holds another key is
ignored and measured again, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write_json, user_cache_dir
from .hardware import native_bf16

log = logging.getLogger(__name__)

PROTOCOL = 2  # bump when the measurement changes
DEFAULT_BOUND = 0.5  # Spearman points (x100) on the labelled sample
COSINE_FLOOR = 0.95  # the same floor the test suite holds every runtime to
PER_TOPIC = 12
SLOW_CUT = 3.0  # a runtime slower than this multiple of the reference is cut short
ROUNDS = 2  # interleaved timed passes; the best counts
WARMUP = 8  # sentences in the warm-up call
REFERENCE = "torch"
SAMPLE_FILE = Path(__file__).resolve().parent.parent / "data" / "demo_zh.jsonl"
#: libraries each runtime needs, checked with find_spec before it is built
_NEEDS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnxruntime", "onnx")}


@dataclass
class Measurement:
    """One runtime on this machine: speed, quality against fp32 torch, or why it was skipped."""

    name: str
    sentences_per_s: float | None = None
    min_cosine: float | None = None
    spearman: float | None = None  # x100, pair cosines vs same-topic labels
    delta: float | None = None  # spearman - the reference's, in points
    seconds: float = 0.0  # building and measuring it (includes a first export)
    skipped: str | None = None  # the one-line reason it cannot be chosen

    def qualifies(self, bound: float) -> bool:
        return (self.skipped is None and self.sentences_per_s is not None and self.delta is not None
                and abs(self.delta) <= bound and (self.min_cosine or 0.0) >= COSINE_FLOOR)


@dataclass
class Decision:
    """What ``auto`` chose and the table it chose from."""

    choice: str
    bound: float
    measurements: list[Measurement]
    key: dict = field(default_factory=dict)
    cached: bool = False
    path: str | None = None
    measured_at: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"choice": self.choice, "bound": self.bound, "cached": self.cached, "path": self.path,
                "measured_at": self.measured_at, "seconds": round(self.seconds, 2), "key": self.key,
                "measurements": [asdict(m) for m in self.measurements]}

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        ms = [Measurement(**m) for m in d["measurements"]]
        return cls(choice=str(d["choice"]), bound=float(d["bound"]), measurements=ms, key=d["key"],
                   measured_at=d.get("measured_at"), seconds=float(d.get("seconds", 0.0)))


def choose(measurements: list[Measurement], bound: float = DEFAULT_BOUND) -> str:
    """The fastest measurement within ``bound`` (ties: the first in the list); the reference when none."""
    best = None
    for m in measurements:
        if m.qualifies(bound) and (best is None or m.sentences_per_s > best.sentences_per_s):
            best = m
    return best.name if best is not None else REFERENCE


def candidates_for(device: str | None) -> list[str]:
    """The registered runtimes worth measuring on ``device``: on a CPU every one whose libraries are
    installed; elsewhere the torch runtimes (ONNX Runtime and OpenVINO run here on the CPU only)."""
    from . import RUNTIME_NAMES

    if not str(device or "cpu").startswith("cpu"):
        return [n for n in RUNTIME_NAMES if n.startswith("torch")]
    return [n for n in RUNTIME_NAMES if all(find_spec(m) is not None for m in _NEEDS.get(n.split("-")[0], ()))]


def sample_sentences(per_topic: int = PER_TOPIC) -> tuple[list[str], np.ndarray]:
    """The measurement sentences and their topic numbers (see the module docstring)."""
    texts, topics, seen = [], [], {}
    with open(SAMPLE_FILE, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            t = seen.setdefault(row["metadata"]["topic"], len(seen))
            if topics.count(t) < per_topic:
                texts.append(row["text"])
                topics.append(t)
    return texts, np.asarray(topics)


def cache_key(encoder, candidates: list[str], bound: float) -> dict:
    """Everything that decides the measured choice; a change in any of it measures again."""
    from importlib import metadata

    from ..provenance import model_fingerprint
    from .hardware import cpu_identity

    libs = {}
    for dist in ("torch", "onnxruntime", "openvino", "sentence-transformers", "transformers", "embedkit"):
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    ident = cpu_identity()
    return {"protocol": PROTOCOL, "cpu": ident["cpu"], "cpu_flags": ident["cpu_flags"],
            "threads": encoder.threads or _torch_threads(), "device": str(encoder.device),
            "model": str(encoder.model_name), "model_fingerprint": model_fingerprint(encoder.model_name),
            "pooling": encoder.pooling, "max_length": encoder.max_length, "batch_size": encoder.batch_size,
            "libraries": libs, "candidates": list(candidates), "bound": float(bound)}


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return user_cache_dir("runtimes", f"{digest}.json")


def read_cached(key: dict) -> Decision | None:
    """The cached decision for ``key``, or None (missing, unreadable, malformed or another key's)."""
    path = cache_path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            raise ValueError("the entry holds another key")
        decision = Decision.from_dict(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("backend auto: ignoring the cached measurement %s (%s); measuring again", path, e)
        return None
    decision.cached, decision.path = True, str(path)
    return decision


def measure(encoder, candidates: list[str] | None = None, *, bound: float = DEFAULT_BOUND,
            keep: bool = True, rounds: int = ROUNDS) -> tuple[Decision, dict]:
    """Measure ``candidates`` (default :func:`candidates_for`) for ``encoder``; returns the decision and
    the runtimes built on the way (name -> runtime; only the chosen one when ``keep``).

    Each runtime is built and warmed up first; then ``rounds`` interleaved passes over all of them
    (so a burst of load elsewhere on the machine hits every runtime alike), the best pass counting."""
    from . import runtime_class

    names = list(candidates or candidates_for(encoder.device))
    names = [REFERENCE] + [n for n in dict.fromkeys(names) if n != REFERENCE]
    texts, topics = sample_sentences()
    iu = np.triu_indices(len(texts), k=1)
    labels = (topics[iu[0]] == topics[iu[1]]).astype(np.float64)
    t_all = time.perf_counter()
    table = {n: Measurement(n) for n in names}
    built, best, vectors = {}, {}, {}
    for name in names:
        t0 = time.perf_counter()
        try:
            if name.endswith("-bf16") and not native_bf16(name, encoder.device):
                table[name].skipped = "no native bf16 on this device (the library's own report)"
                continue
            cls = runtime_class(name)
            runtime = cls(_isolated(encoder) if getattr(cls, "mutates_model", False) else encoder)
            t_warm = time.perf_counter()
            runtime.run(texts[:WARMUP])
            warm = time.perf_counter() - t_warm
        except Exception as e:  # any failure to build or run only removes this candidate
            table[name].skipped = _reason(e)
            log.info("backend auto: %s skipped (%s)", name, table[name].skipped)
        else:
            built[name] = runtime
            if name != REFERENCE and warm > SLOW_CUT * best[REFERENCE]:  # warm-up alone over the limit
                table[name].sentences_per_s = round(WARMUP / warm, 1)
                table[name].skipped = f"slower than 1/{SLOW_CUT:g} of {REFERENCE}: cut short"
                del built[name]
            elif name == REFERENCE:
                best[name] = float("inf")
                vectors[name], best[name] = _timed_pass(runtime, texts, encoder.batch_size, None)
        table[name].seconds = round(time.perf_counter() - t0, 2)
        if name == REFERENCE and name not in built:
            raise InputError(f"backend auto: the reference runtime {REFERENCE!r} cannot run: {table[name].skipped}")
    for r in range(rounds):
        for name in list(built):
            if r == 0 and name == REFERENCE:
                continue  # its first pass ran above, to set the limit
            t0 = time.perf_counter()
            try:
                limit = None if name == REFERENCE else SLOW_CUT * best[REFERENCE]  # the reference is never cut
                got, seconds = _timed_pass(built[name], texts, encoder.batch_size, limit)
            except Exception as e:
                table[name].skipped, got = _reason(e), None
                del built[name]
            else:
                if got is None:
                    table[name].sentences_per_s = round(seconds, 1)
                    table[name].skipped = f"slower than 1/{SLOW_CUT:g} of {REFERENCE}: cut short"
                    del built[name]
                else:
                    vectors.setdefault(name, got)
                    best[name] = min(best.get(name, float("inf")), seconds)
            table[name].seconds = round(table[name].seconds + time.perf_counter() - t0, 2)
    ref = _unit(vectors[REFERENCE])
    ref_rho = _spearman((ref @ ref.T)[iu], labels)
    for name in built:
        m, v = table[name], _unit(vectors[name])
        rho = _spearman((v @ v.T)[iu], labels)
        m.sentences_per_s = round(len(texts) / best[name], 1)
        m.min_cosine = round(float((v * ref).sum(1).min()), 5)
        m.spearman, m.delta = round(rho, 3), round(rho - ref_rho, 3)
    out = [table[n] for n in names]
    decision = Decision(choose(out, bound), float(bound), out, seconds=time.perf_counter() - t_all,
                        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if keep:
        chosen = built[decision.choice]
        if chosen.encoder is not encoder:  # measured on a copy of the model: build it on the real one
            chosen = runtime_class(decision.choice)(encoder)
        built = {decision.choice: chosen}
    return decision, built


def _reason(e: BaseException) -> str:
    first = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def auto_runtime(encoder, *, bound: float = DEFAULT_BOUND, candidates: list[str] | None = None,
                 use_cache: bool = True):
    """The runtime ``backend="auto"`` builds for ``encoder``: from the cached decision for this machine
    and model, else measured now (and cached). Returns ``(runtime, decision)``. A cached choice that no
    longer builds falls back to the next fastest qualifying one, then to torch, with a warning."""
    from . import runtime_class

    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 <= bound < 100:
        raise InputError(f"auto_bound must be a number of Spearman points in [0, 100), got {bound!r}")
    names = list(candidates or candidates_for(encoder.device))
    key = cache_key(encoder, names, bound)
    decision = read_cached(key) if use_cache else None
    if decision is None:
        decision, built = measure(encoder, names, bound=bound)
        decision.key = key
        if use_cache:
            path = cache_path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, decision.to_dict())
                decision.path = str(path)
            except OSError as e:
                log.warning("backend auto: cannot cache the measurement in %s (%s)", path, e)
        return built[decision.choice], decision
    ranked = sorted((m for m in decision.measurements if m.qualifies(decision.bound)),
                    key=lambda m: -m.sentences_per_s)
    for name in [m.name for m in ranked if m.name == decision.choice] + [m.name for m in ranked] + [REFERENCE]:
        try:
            runtime = runtime_class(name)(encoder)
        except Exception as e:
            log.warning("backend auto: the measured choice %s cannot be built now (%s: %s); trying the next",
                        name, type(e).__name__, e)
            continue
        if name != decision.choice:
            decision.choice = name
        return runtime, decision
    raise InputError(f"backend auto: no runtime can be built for {encoder.model_name}")  # pragma: no cover


def _isolated(encoder):
    """A shallow copy of ``encoder`` with its own copy of the model, for a runtime that changes it."""
    import copy

    twin = copy.copy(encoder)
    twin.st = copy.deepcopy(encoder.st)
    return twin


def _timed_pass(runtime, texts: list[str], batch_size: int, limit: float | None):
    """Encode ``texts`` (length-sorted batches); ``(vectors, seconds)``, or ``(None, sentences/s)`` when
    the pass ran past ``limit`` seconds and was cut short."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    parts, done, t0 = [], 0, time.perf_counter()
    for b in range(0, len(texts), batch_size):
        idx = order[b:b + batch_size]
        parts.append((idx, runtime.run([texts[i] for i in idx])[0]))
        done += len(idx)
        elapsed = time.perf_counter() - t0
        if limit is not None and elapsed > limit and done < len(texts):
            return None, done / elapsed
    seconds = time.perf_counter() - t0
    out = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
    for idx, v in parts:
        out[idx] = v
    return out, seconds


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) * 100


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())
