"""The Milvus store against a real standalone Milvus 2.3.5 server, besides Milvus Lite: the server is an
OS process from its own virtual environment (tests/_milvus_server.py), reached over gRPC at
http://127.0.0.1:PORT as a production cluster would be.

* the backend contract of tests/test_index_contract.py (as tests/test_milvus_contract.py runs it on
  Lite), one collection per build (the add/delete test on ``milvus`` only: writes are the same calls
  whatever the index type, and each costs the server seconds);
* documents without metadata (issue 19, defect 11: a server refused null in the JSON field), then
  ``kill -9`` of the server in the middle of an add and a restart over the same data and port:
  nothing committed is lost, the add says it failed and left nothing, the next add succeeds.
"""

import time

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex
from embedkit.stores.milvus_client import MilvusError

from . import test_index_contract as contract
from .conftest import FakeEncoder
from .test_index_contract import (DIM, data, test_bad_k_and_dimension,  # noqa: F401 (collected here)
                                  test_build_records_manifest, test_filters_return_only_matching_metadata,
                                  test_null_filter_matches_null_or_missing, test_recall_at_10_against_exact_numpy,
                                  test_save_load_round_trip_identical, test_scores_are_sorted_and_ids_are_strings)
from .test_milvus_defects import check_documents_without_metadata

# ivf-flat runs on Milvus Lite only (tests/test_milvus_contract.py): the server's path for it is the same
# store code, and each build here costs seconds of the suite's budget
MILVUS_KINDS = ["milvus", "milvus:hnsw"]


@pytest.fixture(scope="module", params=MILVUS_KINDS)
def built(request, data, tmp_path_factory, milvus_server):  # noqa: F811 - replaces the FAISS parametrisation
    docs, table, _ = data
    name = request.param.replace(":", "_").replace("-", "_")
    d = tmp_path_factory.mktemp(name) / "idx"
    idx = EmbedIndex.build(d, iter(docs), encoder=FakeEncoder(DIM, table), index=request.param, chunk_size=700,
                           index_params={"uri": milvus_server.uri, "collection": f"contract_{name}"})
    assert idx.manifest["index"]["uri"] == milvus_server.uri and not (d / "milvus.db").exists()
    yield request.param, d, idx
    idx.backend.close()


@pytest.fixture
def restored(built, data):  # noqa: F811
    """``built``, put back as it was built afterwards: the contract's add/delete test writes through a
    copy of the index directory, and on a server a copy names the same collection."""
    yield built
    docs, _, _ = data
    idx = built[2]
    have = idx.store.existing_ids(x.id for x in docs)
    if len(have) < len(docs):
        idx.add([x for x in docs if x.id not in have])
    if idx.store.existing_ids(["new-1"]):  # the test failed half-way
        idx.delete(["new-1"])
    assert len(idx) == len(docs)


@pytest.mark.parametrize("built", ["milvus"], indirect=True)  # writes go through the same calls for every type
def test_add_then_delete_then_reload(restored, data, tmp_path):  # noqa: F811
    contract.test_add_then_delete_then_reload(restored, data, tmp_path)


class CrashingEncoder(FakeEncoder):
    """Runs ``crash`` when asked to encode ``trigger``: in an add, after its first chunks were written."""

    trigger, crash = None, None

    def encode(self, texts, **kwargs):
        if self.trigger is not None and self.trigger in ([texts] if isinstance(texts, str) else texts):
            self.trigger = None
            self.crash()
        return super().encode(texts, **kwargs)


def _until_loaded(fn, timeout: float = 150.0):
    """A restarted server answers before it has loaded its collections again (it waits out the crashed
    server's sessions); meanwhile every call fails saying so."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception as e:  # MilvusError from embedkit, MilvusException from pymilvus itself
            if time.monotonic() > deadline:
                raise
            assert "not loaded" in str(e) or "cannot reach Milvus" in str(e) or "not ready" in str(e), e
            time.sleep(0.5)


def test_no_metadata_then_kill_9_during_an_add_then_restart(milvus_crash_server, tmp_path):
    """One build for two checks (each build costs the server seconds): documents without metadata
    (defect 11), then a crash in the middle of an add and a restart over the same data and port."""
    from pymilvus import MilvusClient

    srv = milvus_crash_server
    d = tmp_path / "idx"
    check_documents_without_metadata(d, uri=srv.uri, collection="crash")  # 32 documents, 21 without metadata
    enc = CrashingEncoder(16)
    idx = EmbedIndex.load(d, encoder=enc)
    q = enc.encode([f"问题 {i}" for i in range(20)], normalize=True)
    before = idx.search_vectors(q, 10)
    assert len(idx) == 32

    # the server dies while the add encodes its second chunk: the first 20 documents were written
    new = [Doc(f"new-{i}", f"新文档 {i}", {"g": "new"}) for i in range(40)]
    enc.trigger, enc.crash = new[20].text, srv.kill
    with pytest.raises(MilvusError, match=r"adding documents failed, nothing was added: Milvus upsert on collection "
                                          r"'crash__\w+' at 'http://127\.0\.0\.1:\d+' failed: cannot reach Milvus"):
        idx.add(new, chunk_size=20)
    assert enc.trigger is None and srv.proc.poll() is not None
    for down in (lambda: len(idx), lambda: EmbedIndex.load(d, encoder=enc)):
        with pytest.raises(MilvusError, match=r"cannot reach Milvus at 'http://127\.0\.0\.1:\d+'"):
            down()

    srv.start().wait_ready()  # the same data directory, the same port
    raw = MilvusClient(uri=srv.uri, timeout=10)
    # the server replays every write it acknowledged: the failed add's first chunk is back in the collection...
    stored = _until_loaded(lambda: raw.query(idx.store.physical, filter="", output_fields=["count(*)"]))
    assert stored[0]["count(*)"] == 52
    # ...and the index, which could not take it back while the server was down, does so before anything else
    assert len(idx) == 32
    assert [idx.get(f"new-{i}") for i in (0, 19, 20, 39)] == [None] * 4  # written, cut short, never sent
    after = idx.search_vectors(q, 10)
    assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
    np.testing.assert_allclose([[h.score for h in r] for r in after], [[h.score for h in r] for r in before],
                               rtol=1e-5, atol=1e-6)
    assert idx.get("d1").metadata is None and idx.get("d3").metadata == {"lang": "zh", "i": 3}

    assert idx.add(new, chunk_size=20) == 40  # the same documents again, now committed
    reopened = EmbedIndex.load(d, encoder=FakeEncoder(16))
    for i in (idx, reopened):
        assert len(i) == 72
        assert i.search_vectors(enc.encode(["新文档 5"], normalize=True), 1)[0][0].id == "new-5"
        assert i.get("new-39").metadata == {"g": "new"} and i.get("n0").metadata is None
    reopened.backend.close()
    idx.backend.close()
