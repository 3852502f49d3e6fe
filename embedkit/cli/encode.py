"""``embedkit encode``: sentences to a .npy of vectors plus ids (or Parquet shards with ``--engine ray``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from .options import (
    CorpusSpec,
    EncoderSpec,
    EngineSpec,
    corpus_options,
    encoder_options,
    engine_options,
)

log = logging.getLogger("embedkit")


@click.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output .npy (float32 vectors); ids go to OUTPUT with suffix .ids.json. "
                   "--engine ray: a new directory of Parquet shards (id, vector).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Encode through an index's query path (its model, pooling, reducer, metric).")
@click.option("--no-normalize", is_flag=True, help="Keep raw vectors (no L2 normalisation).")
@corpus_options
@encoder_options
@engine_options
def encode(input: Path, output: Path, index_dir: Path | None, no_normalize: bool, *, corpus_spec: CorpusSpec,
           encoder: EncoderSpec, engine: EngineSpec):
    """Encode INPUT (.txt one sentence a line, .jsonl, .tsv) into OUTPUT.npy plus OUTPUT.ids.json."""
    if engine.ray:  # also reads Parquet; see embedkit/ray_encode.py
        return _encode_ray(input, output, index_dir=index_dir, normalize=not no_normalize, corpus_spec=corpus_spec,
                           encoder=encoder, engine=engine)

    import numpy as np

    from ..corpus import CorpusStats
    from ..fsutil import atomic_write, atomic_write_json

    if output.suffix != ".npy":
        raise click.BadParameter(f"{str(output)!r} must end in .npy", param_hint="--output")
    stats = CorpusStats()
    docs = list(corpus_spec.iter(input, stats))
    t0 = time.perf_counter()
    texts = [d.text for d in docs]
    if index_dir is not None:
        from ..index import EmbedIndex

        idx = EmbedIndex.load(index_dir, backend=encoder.backend, device=encoder.device)
        vecs = idx.embed(texts, batch_size=encoder.batch_size)
    else:
        vecs = encoder.make().encode(texts, normalize=not no_normalize)
    dt = time.perf_counter() - t0
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: np.save(f, vecs, allow_pickle=False))
    ids_path = output.with_suffix(".ids.json")
    atomic_write_json(ids_path, [d.id for d in docs])
    log.info("%s; encoded in %.1fs (%.0f sentences/s)", stats.summary(), dt, len(docs) / max(dt, 1e-9))
    click.echo(json.dumps({"vectors": str(output), "ids": str(ids_path), "count": len(docs),
                           "dim": int(vecs.shape[1]), "skipped_empty": len(stats.skipped_empty)},
                          ensure_ascii=False))


def _encode_ray(input: Path, output: Path, *, index_dir: Path | None, normalize: bool, corpus_spec: CorpusSpec,
                encoder: EncoderSpec, engine: EngineSpec) -> None:
    """``embedkit encode --engine ray``: OUTPUT is a new directory of Parquet shards."""
    from ..ray_encode import encode_to_parquet

    if encoder.backend != "torch":
        raise click.BadParameter("--engine ray encodes with the torch backend", param_hint="--backend")
    summary = encode_to_parquet(input, output, **corpus_spec.kwargs(), model=encoder.model, pooling=encoder.pooling,
                                max_length=encoder.max_length, batch_size=encoder.batch_size, index_dir=index_dir,
                                normalize=normalize, device=encoder.device, num_workers=engine.num_workers,
                                address=engine.address)
    click.echo(json.dumps(summary, ensure_ascii=False))
