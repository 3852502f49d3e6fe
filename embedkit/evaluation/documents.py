"""Long-document retrieval evaluation: questions over documents, each splitting setting a real index.

Inputs (:func:`load_task`):

* a **SQuAD-style JSON** file (``data[].paragraphs[].context`` and ``qas[].question``; CMRC 2018 is
  one): the documents are the paragraphs in file order, ``concat=N`` joins every N consecutive
  paragraphs into one longer document (a line break between them); a question's relevant document is
  the one holding its paragraph;
* a **BEIR directory** (``corpus.jsonl`` with ``_id``, ``title``, ``text``; ``queries.jsonl`` with
  ``_id``, ``text``; ``qrels/<split>.tsv`` with ``query-id``, ``corpus-id``, ``score``): positives
  are the qrels with a score above 0.

For each setting (:func:`parse_setting`: ``truncate``, ``truncate:512``, ``passages``,
``passages:TOKENS[:OVERLAP]``) an :class:`embedkit.index.EmbedIndex` is built through the product's
own build path (real FAISS, flat by default), searched with ``EmbedIndex.search`` at the document
level, and scored with ir-measures (:func:`embedkit.evaluation.retrieval.ir_metrics`). The cost of
passages is on the same row: vectors per document, index bytes on disk and build seconds.
``lexical`` (BM25 over whole documents) and ``hybrid`` (dense documents fused with BM25 by
:func:`embedkit.fusion.fuse`, the weight tuned on another task, e.g. CMRC trial) are scored over the
same index.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..corpus import Doc
from ..errors import InputError

log = logging.getLogger(__name__)

DEPTH = 50  # per-side list depth fused by hybrid (as embedkit.index.hybrid.DEPTH)


@dataclass
class DocTask:
    name: str
    docs: list[Doc]
    queries: list[str]
    relevant: list[list[str]]
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        lens = sorted(len(d.text) for d in self.docs)
        return {"task": self.name, "documents": len(self.docs), "queries": len(self.queries),
                "chars_median": lens[len(lens) // 2] if lens else 0, "chars_max": lens[-1] if lens else 0, **self.extra}


def load_task(path, *, concat: int = 1, split: str = "test", max_queries: int | None = None) -> DocTask:
    """A SQuAD-style JSON file or a BEIR directory (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"retrieval data {str(path)!r} does not exist")
    task = _load_beir(path, split) if path.is_dir() else _load_squad(path, concat)
    if max_queries is not None:
        task.queries, task.relevant = task.queries[:max_queries], task.relevant[:max_queries]
    if not task.queries:
        raise InputError(f"{str(path)!r} has no question with a relevant document")
    return task


def _load_squad(path: Path, concat: int) -> DocTask:
    if isinstance(concat, bool) or not isinstance(concat, int) or concat < 1:
        raise InputError(f"concat must be a positive integer, got {concat!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{str(path)!r} is not a SQuAD-style JSON file (data[].paragraphs[]): {e}") from None
    paragraphs = [p for art in data for p in art.get("paragraphs", []) if str(p.get("context", "")).strip()]
    docs, queries, relevant = [], [], []
    for start in range(0, len(paragraphs), concat):
        group = paragraphs[start:start + concat]
        did = f"d{start // concat}"
        docs.append(Doc(did, "\n".join(p["context"] for p in group)))
        for p in group:
            for qa in p.get("qas", []):
                if str(qa.get("question", "")).strip():
                    queries.append(qa["question"])
                    relevant.append([did])
    name = path.stem + (f"-concat{concat}" if concat > 1 else "")
    return DocTask(name, docs, queries, relevant, {"format": "squad", "concat": concat})


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"BEIR layout: {str(path)!r} is missing")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_beir(path: Path, split: str) -> DocTask:
    corpus = _jsonl(path / "corpus.jsonl")
    queries = {str(q["_id"]): q["text"] for q in _jsonl(path / "queries.jsonl")}
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InputError(f"BEIR layout: {str(qrels_path)!r} is missing")
    rel: dict[str, list[str]] = {}
    with open(qrels_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and parts[0] == "query-id" or len(parts) < 3:
                continue
            if float(parts[2]) > 0:
                rel.setdefault(parts[0], []).append(parts[1])
    docs = [Doc(str(d["_id"]), "\n".join(t for t in (d.get("title"), d.get("text")) if t)) for d in corpus]
    qids = [q for q in rel if q in queries]
    return DocTask(path.name, docs, [queries[q] for q in qids], [rel[q] for q in qids], {"format": "beir", "split": split})


def parse_setting(spec: str) -> dict:
    """``truncate[:MAX_LENGTH]`` or ``passages[:TOKENS[:OVERLAP]]`` -> build keywords + a label."""
    name, *args = str(spec).strip().split(":")
    try:
        nums = [int(a) for a in args]
    except ValueError:
        raise InputError(f"setting {spec!r}: numbers expected after the mode") from None
    if name == "truncate" and len(nums) <= 1:
        return {"label": spec, "split": "truncate", "max_length": nums[0] if nums else None}
    if name == "passages" and len(nums) <= 2:
        return {"label": spec, "split": "passages", "passage_tokens": nums[0] if nums else None,
                "passage_overlap": nums[1] if len(nums) > 1 else None}
    raise InputError(f"setting {spec!r} is not truncate[:MAX_LENGTH] or passages[:TOKENS[:OVERLAP]]")


def evaluate_task(task: DocTask, *, model: str, settings, modes=("dense",), hybrid_weight: float = 0.7,
                  index: str = "flat", batch_size: int = 32, device: str | None = None, k: int = 10) -> list[dict]:
    """One row per (setting, mode): the four metrics, vectors per document, index bytes, build seconds."""
    from ..fusion import fuse
    from ..index.directory import dir_size
    from .retrieval import ir_metrics

    for mode in modes:
        if mode not in ("dense", "lexical", "hybrid"):
            raise InputError(f"mode {mode!r} is not one of dense, lexical, hybrid")
    rows, encoders = [], {}
    lexical = any(m in ("lexical", "hybrid") for m in modes)
    with tempfile.TemporaryDirectory(prefix="embedkit-doceval-") as tmp:
        for i, spec in enumerate(settings):
            t0 = time.perf_counter()
            idx = _build(task, spec, Path(tmp) / f"s{i}", encoders, model=model, batch_size=batch_size,
                         device=device, index=index, lexical=lexical)
            cost = {"setting": spec, "vectors_per_doc": round(idx.store.count() / len(idx), 3),
                    "index_bytes": dir_size(idx.generation), "build_seconds": round(time.perf_counter() - t0, 2),
                    "passages": idx.manifest.get("passages")}
            lists = _lists(idx, task.queries, dense=any(m in ("dense", "hybrid") for m in modes), lexical=lexical)
            idx.store.close()
            for mode in modes:
                ranked = fuse(lists["dense"], lists["lexical"], weight=hybrid_weight, top_k=k) if mode == "hybrid" \
                    else [r[:k] for r in lists[mode]]
                m = ir_metrics([[d for _, d in hits] for hits in ranked], task.relevant)
                rows.append({**cost, "mode": mode, **{key: round(100 * m[key], 2) for key in
                                                      ("mrr@10", "recall@1", "recall@10", "ndcg@10")}})
                log.info("%s %s %s: MRR@10 %.2f", task.name, spec, mode, rows[-1]["mrr@10"])
    return rows


def _build(task: DocTask, spec: str, directory: Path, encoders: dict, *, model, batch_size, device, index="flat",
           lexical=False):
    """The index of ``task``'s documents under setting ``spec``, built by the product's build path."""
    from ..encoder import Encoder
    from ..index import EmbedIndex

    st = parse_setting(spec)
    max_length = st.get("max_length") or 64
    if max_length not in encoders:
        encoders[max_length] = Encoder(model, max_length=max_length, batch_size=batch_size, device=device)
    kw = {key: st[key] for key in ("split", "passage_tokens", "passage_overlap") if key in st}
    return EmbedIndex.build(directory, task.docs, encoder=encoders[max_length], index=index, lexical=lexical,
                            show_progress_bar=False, **kw)


def _lists(idx, queries: list[str], *, dense: bool = True, lexical: bool = False) -> dict:
    """Per side, per query ``[(score, doc id), ...]`` best first (``DEPTH`` deep), from ``EmbedIndex.search``."""
    out = {}
    for side, wanted in (("dense", dense), ("lexical", lexical)):
        if wanted:
            out[side] = [[(h.score, h.id) for h in hits] for hits in idx.search(queries, DEPTH, mode=side)]
    return out


def tune_hybrid_weight(task: DocTask, *, model: str, setting: str = "passages", batch_size: int = 32,
                       device: str | None = None) -> dict:
    """The dense weight that maximises MRR@10 of :func:`embedkit.fusion.fuse` on ``task`` (tune on one
    task, report on another)."""
    from ..fusion import tune_weight

    with tempfile.TemporaryDirectory(prefix="embedkit-doctune-") as tmp:
        idx = _build(task, setting, Path(tmp) / "i", {}, model=model, batch_size=batch_size, device=device,
                     lexical=True)
        lists = _lists(idx, task.queries, lexical=True)
        idx.store.close()
    best = tune_weight(lists["dense"], lists["lexical"], task.relevant)
    return {"weight": best["weight"], "mrr@10": round(100 * best["score"], 2), "tuned_on": task.name,
            "grid": [{"weight": g["weight"], "mrr@10": round(100 * g["score"], 2)} for g in best["grid"]]}


def run_documents_eval(path, *, model: str, settings, concats=(1,), modes=("dense",), tune_path=None,
                       max_queries: int | None = None, split: str = "test", batch_size: int = 32,
                       device: str | None = None, index: str = "flat") -> dict:
    """Every (concat, setting, mode) row for ``path``, with the hybrid weight tuned on ``tune_path``
    (when hybrid is asked for; else the index default 0.7). The dict ``embedkit eval --documents`` writes."""
    from ..provenance import versions

    for spec in settings:
        parse_setting(spec)  # fail before any model loads
    t0 = time.perf_counter()
    tuning = None
    if "hybrid" in modes and tune_path is not None:
        tuning = tune_hybrid_weight(load_task(tune_path, split=split), model=model, batch_size=batch_size,
                                    device=device)
    weight = tuning["weight"] if tuning else 0.7
    tasks, rows = [], []
    for concat in concats:
        task = load_task(path, concat=concat, split=split, max_queries=max_queries)
        tasks.append(task.summary())
        for row in evaluate_task(task, model=model, settings=settings, modes=modes, hybrid_weight=weight,
                                 index=index, batch_size=batch_size, device=device):
            rows.append({"task": task.name, **row})
    return {"model": str(model), "data": str(path), "tasks": tasks, "hybrid": tuning or {"weight": weight},
            "rows": rows, "versions": versions("faiss"), "seconds": round(time.perf_counter() - t0, 1)}


def markdown_table(result: dict) -> str:
    head = ["task", "setting", "mode", "MRR@10", "R@1", "R@10", "nDCG@10", "vectors/doc", "index MB", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append(f"| {r['task']} | {r['setting']} | {r['mode']} | {r['mrr@10']:.2f} | {r['recall@1']:.2f} | "
                     f"{r['recall@10']:.2f} | {r['ndcg@10']:.2f} | {r['vectors_per_doc']:.2f} | "
                     f"{r['index_bytes'] / 1e6:.2f} | {r['build_seconds']:.1f} |")
    return "\n".join(lines)
