"""``embedkit index``: build, add, delete, info and migrate index directories.

Heavy libraries (torch, faiss, pymilvus, ray) are imported inside the command bodies, never at module level."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import click

from ..constants import INDEX_HELP, METRICS, POOLINGS, REDUCE_HELP, SPLIT_MODES, TEXT_NORMALIZATIONS
from .options import (
    CorpusSpec,
    EncoderSpec,
    EngineSpec,
    MilvusSpec,
    backend_option,
    corpus_options,
    encoder_options,
    engine_options,
    grouped,
    milvus_options,
)

log = logging.getLogger("embedkit")


@dataclass(frozen=True)
class BuildSpec:
    """What ``index build`` builds: reducer, index type, metric and the streaming/fitting knobs."""

    reduce: str = "none"
    index_type: str = "flat"
    metric: str = "cosine"
    ef_search: int | None = None
    nprobe: int | None = None
    rescore: int | None = None
    chunk_size: int = 4096
    fit_sample: int = 50000
    overwrite: bool = False
    expected_size: int | None = None
    lexical: bool = False
    tune_pairs: Path | None = None
    normalize: str = "none"
    split: str | None = None           # None: passages (--engine local), truncate (--engine ray)
    passage_tokens: int | None = None
    passage_overlap: int | None = None

    @property
    def milvus(self) -> bool:
        return self.index_type == "milvus" or self.index_type.startswith("milvus:")

    def index_params(self) -> dict:
        return {k: v for k, v in (("efSearch", self.ef_search), ("nprobe", self.nprobe), ("rescore", self.rescore))
                if v is not None}

    def build_kwargs(self, index_params: dict) -> dict:
        """Keywords of ``EmbedIndex.build`` (and of the Ray build, which forwards them)."""
        out = {"reduce": self.reduce, "index": self.index_type, "metric": self.metric, "index_params": index_params,
               "chunk_size": self.chunk_size, "fit_sample": self.fit_sample, "overwrite": self.overwrite}
        if self.lexical:
            out["lexical"] = True
        if self.tune_pairs is not None:
            out["tune_pairs"] = self.tune_pairs
        if self.normalize != "none":
            out["normalize"] = self.normalize
        return out

    def split_kwargs(self) -> dict:
        """How documents are read (``EmbedIndex.build``'s split options; --engine local only)."""
        return {"split": self.split or "passages", "passage_tokens": self.passage_tokens,
                "passage_overlap": self.passage_overlap}


build_options = grouped(
    BuildSpec, "build",
    click.option("--reduce", default="none", show_default=True,
                 help=f"{REDUCE_HELP} (fitted on the first --fit-sample docs)."),
    click.option("--index", "index_type", default="flat", show_default=True, help=INDEX_HELP),
    click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True),
    click.option("--ef-search", type=click.IntRange(min=1), default=None, help="hnsw: efSearch (default tuned)."),
    click.option("--nprobe", type=click.IntRange(min=1), default=None, help="ivf-*: nprobe (default tuned)."),
    click.option("--rescore", type=click.IntRange(min=1), default=None,
                 help="binary*: Hamming shortlist of k x RESCORE rescored exactly (default 10; larger for 1M+)."),
    click.option("--chunk-size", type=click.IntRange(min=1), default=4096, show_default=True,
                 help="Documents encoded and added per streaming step (bounds memory)."),
    click.option("--fit-sample", type=click.IntRange(min=2), default=50000, show_default=True,
                 help="Documents the reducer and IVF quantizer are fitted on."),
    click.option("--overwrite", is_flag=True, help="Replace an existing index at OUTPUT."),
    click.option("--expected-size", type=click.IntRange(min=1), default=None,
                 help="ivf-*: corpus size the lists are sized for (default: the corpus file's line count)."),
    click.option("--normalize", type=click.Choice(TEXT_NORMALIZATIONS), default="none", show_default=True,
                 help="Text stage of the query path (documents and queries): nfkc = full-width to half-width + "
                      "case folding; t2s / s2t = Traditional <-> Simplified Chinese (OpenCC)."),
    click.option("--split", type=click.Choice(SPLIT_MODES), default=None,
                 help="How a document longer than the encoder's window is read: passages (split at sentence ends "
                      "on the model's tokenizer, each passage indexed, results per document; the default) or "
                      "truncate (its first --max-length tokens only; --engine ray's only mode)."),
    click.option("--passage-tokens", type=click.IntRange(min=1), default=None,
                 help="passages: tokens per passage (default: --max-length less the special tokens)."),
    click.option("--passage-overlap", type=click.IntRange(min=0), default=None,
                 help="passages: tokens each passage repeats from the end of the previous one "
                      "(default: half of --passage-tokens, chosen on CMRC 2018; see the README)."),
    click.option("--lexical", is_flag=True,
                 help="Also index Chinese words (BM25) for --mode lexical|hybrid search."),
    click.option("--tune-pairs", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Labelled pairs (sentence1<TAB>sentence2<TAB>label): --reduce auto chooses on them, and "
                      "--lexical tunes the hybrid fusion weight on them."),
)


@click.group()
def index():
    """Build, extend, shrink and inspect index directories."""


@index.command("build")
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index directory to create (e.g. indexes/my-index).")
@build_options
@corpus_options
@encoder_options
@engine_options
@milvus_options
def index_build(corpus: Path, output: Path, *, build: BuildSpec, corpus_spec: CorpusSpec, encoder: EncoderSpec,
                engine: EngineSpec, milvus: MilvusSpec):
    """Build an index directory from CORPUS."""
    from ..corpus import CorpusStats
    from ..index import EmbedIndex
    from ..reducers import make_reducer

    make_reducer(build.reduce)  # validate before loading the model
    params = build.index_params()
    if build.milvus:
        params = milvus.params(params)
        from ..stores.milvus_client import preflight

        preflight(build.index_type, output, params)  # an unreachable server fails before the model loads
    elif milvus.given:
        raise click.BadParameter("--milvus-uri/--milvus-collection need --index milvus[:TYPE]",
                                 param_hint="--milvus-uri")
    if engine.ray and build.normalize != "none":
        raise click.BadParameter("--engine ray encodes raw texts; build with --engine local to use --normalize",
                                 param_hint="--normalize")
    if engine.ray and (build.split == "passages" or build.passage_tokens or build.passage_overlap is not None):
        raise click.BadParameter("--engine ray reads each document whole up to --max-length; passages are split "
                                 "and encoded by --engine local (or pass --split truncate)", param_hint="--split")
    if engine.ray:
        return _build_ray(corpus, output, build.build_kwargs(params), corpus_spec=corpus_spec, encoder=encoder,
                          engine=engine)
    stats = CorpusStats()
    expected = build.expected_size or corpus_spec.count(corpus)
    idx = EmbedIndex.build(output, corpus_spec.iter(corpus, stats), encoder=encoder.make(),
                           expected_size=expected, **build.build_kwargs(params), **build.split_kwargs())
    log.info(stats.summary())
    click.echo(json.dumps(_summary(idx), ensure_ascii=False))


def _build_ray(corpus: Path, output: Path, build_kwargs: dict, *, corpus_spec: CorpusSpec, encoder: EncoderSpec,
               engine: EngineSpec) -> None:
    """``embedkit index build --engine ray``: vectors on Ray, streamed from the shards into the index."""
    from ..ray_encode import build_index_with_ray

    m = build_index_with_ray(corpus, output, address=engine.address, num_workers=engine.num_workers,
                             batch_size=encoder.batch_size, model=encoder.model, pooling=encoder.pooling,
                             max_length=encoder.max_length, device=encoder.device,
                             corpus_kwargs=corpus_spec.kwargs(), **build_kwargs)
    click.echo(json.dumps({"index": str(output), "count": m["count"], "dim": m["dim"],
                           "reducer": m["reducer"]["spec"], "factory": m["index"]["factory"],
                           "metric": m["metric"], "engine": "ray"}, ensure_ascii=False))


@index.command("migrate")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--index", "index_type", default="milvus", show_default=True,
              help="milvus | milvus:ivf-flat | milvus:hnsw | milvus:autoindex")
@milvus_options
@click.option("--overwrite", is_flag=True, help="Replace an existing index at DST (and its collection).")
def migrate_cmd(src: Path, dst: Path, index_type: str, overwrite: bool, *, milvus: MilvusSpec):
    """Copy the FAISS index SRC into a new Milvus-backed index directory DST.

    Model, reducer and metric are kept; vectors are read back from FAISS (flat, HNSW, IVF-flat) or
    re-encoded from the stored texts (PQ/SQ codes are lossy)."""
    from ..stores.milvus_client import is_milvus_kind
    from ..stores.migrate import migrate

    if not is_milvus_kind(index_type):
        raise click.BadParameter(f"{index_type!r} is not a Milvus index type", param_hint="--index")
    idx = migrate(src, dst, index=index_type, index_params=milvus.params(), overwrite=overwrite)
    m = idx.manifest
    click.echo(json.dumps({"index": str(dst), "count": m["count"], "collection": m["index"]["collection"],
                           "uri": m["index"]["uri"], "factory": m["index"]["factory"],
                           "vectors": m["migrated_from"]["vectors"]}, ensure_ascii=False))


@index.command("add")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@corpus_options
@backend_option()
@click.option("--device", default=None)
def index_add(directory: Path, corpus: Path, backend: str, device: str | None, *, corpus_spec: CorpusSpec):
    """Add the documents of CORPUS to the index in DIRECTORY (ids must be new)."""
    from ..corpus import CorpusStats
    from ..index import EmbedIndex

    stats = CorpusStats()
    idx = EmbedIndex.load(directory, backend=backend, device=device)
    n = idx.add(corpus_spec.iter(corpus, stats))
    log.info("%s; added %d", stats.summary(), n)
    click.echo(json.dumps(dict(_summary(idx), added=n), ensure_ascii=False))


@index.command("reembed")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "-m", required=True, help="The new model directory (e.g. one `embedkit finetune` wrote).")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None, help="Default: the index's.")
@click.option("--max-length", type=click.IntRange(min=1), default=None, help="Default: the index's.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--tune-pairs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labelled pairs to re-tune the hybrid weight / auto reducer on (default: the pairs they were tuned on).")
@click.option("--no-recalibrate", is_flag=True, help="Drop a calibration instead of fitting it again on its pairs file.")
@backend_option()
@click.option("--device", default=None)
def index_reembed(directory: Path, model: str, pooling: str | None, max_length: int | None, batch_size: int | None,
                  tune_pairs: Path | None, no_recalibrate: bool, backend: str, device: str | None):
    """Re-encode every document of DIRECTORY with another model while the index keeps serving, take the
    writes committed meanwhile, and switch to it atomically (a running `embedkit serve` follows)."""
    from ..index import EmbedIndex
    from ..index.reembed import reembed_index

    _, summary = reembed_index(EmbedIndex, directory, model=model, pooling=pooling, max_length=max_length,
                               backend=backend, device=device, batch_size=batch_size, tune_pairs=tune_pairs,
                               recalibrate=not no_recalibrate)
    if summary.get("calibration_dropped"):
        log.warning("%s", summary["calibration_dropped"])
    click.echo(json.dumps(summary, ensure_ascii=False))


@index.command("delete")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("ids", nargs=-1, required=True)
def index_delete(directory: Path, ids: tuple[str, ...]):
    """Delete documents by id (all or nothing: an unknown id deletes none). Loads no model."""
    from ..index import EmbedIndex

    idx = EmbedIndex.load(directory)  # the query path loads its model lazily: never here
    n = idx.delete(ids)
    click.echo(json.dumps(dict(_summary(idx), deleted=n), ensure_ascii=False))


@index.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_info(directory: Path):
    """Print an index's manifest (model, pooling, reducer, metric, FAISS factory, count, segments and
    deletions pending compaction, bytes per vector...) as JSON."""
    from ..index.summary import read_info

    info = read_info(directory)
    if info is None:  # rows in a server (Milvus): open the index and ask it
        from ..index import EmbedIndex

        info = EmbedIndex.load(directory).info()
    click.echo(json.dumps(info, ensure_ascii=False, indent=2))


@index.command("compact")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_compact(directory: Path):
    """Fold delta segments and deletions into a new base (atomic; readers keep working)."""
    from ..index import EmbedIndex

    idx = EmbedIndex.load(directory)
    before = len(idx.manifest["index"].get("segments", []))
    done = idx.compact()
    click.echo(json.dumps(dict(_summary(idx), compacted=done, segments_folded=before if done else 0),
                          ensure_ascii=False))


@index.command("lexical")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tune-pairs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labelled pairs (sentence1<TAB>sentence2<TAB>label) the hybrid fusion weight is tuned on.")
@backend_option()
@click.option("--device", default=None)
def index_lexical(directory: Path, tune_pairs: Path | None, backend: str, device: str | None):
    """Add the lexical (Chinese BM25) part to an index, or re-tune its hybrid fusion weight."""
    from ..index import EmbedIndex

    idx = EmbedIndex.load(directory, backend=backend, device=device)
    idx.add_lexical(tune_pairs=tune_pairs)
    click.echo(json.dumps(dict(_summary(idx), lexical=True, fusion=idx.manifest.get("fusion")), ensure_ascii=False))


@index.command("check")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_check(directory: Path):
    """Verify ids, counts and files across base, segments and deletions; exit 1 naming what is broken."""
    from ..errors import IndexFormatError
    from ..index import EmbedIndex

    problems = EmbedIndex.load(directory).check()
    if problems:
        raise IndexFormatError(f"{len(problems)} problem(s) in {str(directory)!r}: " + "; ".join(problems))
    click.echo(json.dumps({"index": str(directory), "ok": True}, ensure_ascii=False))


def _summary(idx) -> dict:
    info = idx.info()
    return {"index": str(idx.directory), "count": info["count"], "dim": info["dim"],
            "reducer": info["reducer"]["spec"], "factory": info["index"].get("factory"), "metric": info["metric"],
            "segments": len(info["index"].get("segments", [])), "size_bytes": info["size_bytes"]}
