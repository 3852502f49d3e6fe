"""Distributed encoding on a real local Ray (2 CPUs, started here and stopped afterwards) with the
real m3e-small model: same vectors as one process, a worker killed mid-job is retried without losing
or duplicating ids, `index build --engine ray`, and an unreachable address failing fast."""

import json
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedkit import ray_encode
from embedkit.cli import main as _main
from embedkit.corpus import read_corpus
from embedkit.encoder import Encoder
from embedkit.errors import EmbedkitError
from embedkit.index import EmbedIndex
from embedkit.ray_encode import RayError, encode_to_parquet, init_ray
from embedkit.ray_shards import read_vectors

from .conftest import M3E, STS, TINY

pytestmark = pytest.mark.slow


def main(argv):
    try:
        _main(argv)
    except SystemExit as e:
        assert e.code in (0, None), f"embedkit {argv} exited {e.code}"


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sentences():
    """Unique sentences from the shared STS-B and LCQMC test splits (a small slice)."""
    out, seen = [], set()
    for task, n in (("STS-B", 40), ("LCQMC", 40)):
        with open(STS / task / f"{task}.test.data", encoding="utf-8") as f:
            for line in f:
                for s in line.rstrip("\n").split("\t")[:2]:
                    if s.strip() and s not in seen and len(out) < (40 if task == "STS-B" else 80):
                        seen.add(s)
                        out.append(s)
    return out


def test_ray_vectors_equal_single_process_through_an_index_query_path(ray_local, sentences, tmp_path, capsys,
                                                                       m3e_encoder):
    corpus = tmp_path / "s.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"s{i}", "text": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(sentences)), encoding="utf-8")
    idx = EmbedIndex.build(tmp_path / "idx", read_corpus(corpus), encoder=m3e_encoder, reduce="pca:64")
    main(["-q", "encode", str(corpus), "-o", str(tmp_path / "vec"), "--engine", "ray", "--index",
          str(tmp_path / "idx"), "--num-workers", "2", "--batch-size", "16"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == len(sentences) and summary["dim"] == 64 and summary["reducer"] == "pca:64"
    ids, vecs = read_vectors(tmp_path / "vec")
    assert sorted(ids) == sorted(f"s{i}" for i in range(len(sentences)))
    ref = idx.embed(sentences)
    got = vecs[np.argsort([int(i[1:]) for i in ids])]
    assert np.abs(got - ref).max() <= 1e-5
    assert pq.read_schema(next((tmp_path / "vec").glob("*.parquet"))).field("vector").type == pa.list_(pa.float32(), 64)


def test_a_worker_killed_mid_job_is_retried_without_lost_or_duplicate_ids(ray_local, tmp_path, monkeypatch):
    n = 300
    table = pa.table({"id": [f"p{i}" for i in range(n)], "text": [f"第{i}句话，测试用的句子。" for i in range(n)]})
    (tmp_path / "in").mkdir()
    pq.write_table(table.slice(0, 150), tmp_path / "in" / "a.parquet")
    pq.write_table(table.slice(150), tmp_path / "in" / "b.parquet")
    flag = tmp_path / "died-once"

    class DiesOnceActor(ray_encode.EncodeActor):
        """The first actor to find the flag file missing creates it and kills its worker mid-job.
        (Defined in this function, so Ray ships the class by value to its workers.)"""

        def __call__(self, batch):
            import os

            if not flag.exists():
                flag.write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(ray_encode, "EncodeActor", DiesOnceActor)
    s = encode_to_parquet(tmp_path / "in", tmp_path / "out", model=str(TINY), num_workers=2, batch_size=20)
    assert flag.exists(), "the fault was not injected"
    ids, vecs = read_vectors(tmp_path / "out")
    assert s["count"] == n and len(ids) == n and set(ids) == set(table.column("id").to_pylist())
    ref = Encoder(str(TINY)).encode(table.column("text").to_pylist())
    order = {i: k for k, i in enumerate(ids)}
    assert np.abs(vecs[[order[f"p{i}"] for i in range(n)]] - ref).max() <= 1e-5


def test_index_build_with_ray_engine_streams_shards_into_faiss(ray_local, sentences, tmp_path, capsys, m3e_encoder):
    corpus = tmp_path / "s.txt"
    corpus.write_text("\n".join(sentences[:60]) + "\n", encoding="utf-8")
    main(["-q", "index", "build", str(corpus), "-o", str(tmp_path / "idx"), "--engine", "ray", "--model", str(M3E),
          "--reduce", "whitening:32", "--num-workers", "2"])
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 60 and out["engine"] == "ray"
    idx = EmbedIndex.load(tmp_path / "idx", encoder=m3e_encoder)
    local = EmbedIndex.build(tmp_path / "local", read_corpus(corpus), encoder=m3e_encoder, reduce="whitening:32")
    hits = idx.search(sentences[:5], 1)
    assert [h[0].text for h in hits] == sentences[:5]
    assert [h[0].id for h in hits] == [h[0].id for h in local.search(sentences[:5], 1)]
    assert not list(tmp_path.glob(".idx.ray-*"))  # the intermediate shards are gone


def test_unreachable_ray_address_fails_fast():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(RayError, match=f"cannot reach Ray at '127.0.0.1:{port}'") as e:
        init_ray(f"127.0.0.1:{port}", timeout=3)
    assert isinstance(e.value, EmbedkitError)
