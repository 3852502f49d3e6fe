"""Issue 19, defect 11: documents without metadata are stored in Milvus as ``{}`` (a Milvus server
refuses null in a JSON field; Milvus Lite let it through), and still read back as no metadata.
tests/test_milvus_server.py runs the same check against a real Milvus server."""

import numpy as np

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex

from .conftest import FakeEncoder


def check_documents_without_metadata(directory, **index_params) -> None:
    docs = [Doc(f"d{i}", f"文本 {i}", None if i % 3 else {"lang": "zh", "i": i}) for i in range(30)]
    idx = EmbedIndex.build(directory, docs, encoder=FakeEncoder(16), index="milvus", index_params=index_params)
    idx.add([Doc("n0", "没有元数据的新文档"), Doc("n1", "有元数据", {"lang": "en"})])
    store = idx.store
    rows = store.client.query(store.physical, filter='id in ["d1", "n0", "d3"]', output_fields=["id", "metadata"])
    stored = {r["id"]: r["metadata"] for r in rows}
    assert stored == {"d1": {}, "n0": {}, "d3": {"lang": "zh", "i": 3}}
    assert idx.get("d1").metadata is None and idx.get("n0").metadata is None
    assert idx.get("d3").metadata == {"lang": "zh", "i": 3}
    q = FakeEncoder(16).encode(["没有元数据的新文档"], normalize=True)
    hits = idx.search_vectors(np.asarray(q), 32)[0]
    assert len(hits) == 32 and all(h.metadata is None for h in hits if h.id in ("d1", "n0"))
    missing = {h.id for h in idx.search_vectors(q, 32, filter={"lang": None})[0]}  # null matches missing
    assert missing == {f"d{i}" for i in range(30) if i % 3} | {"n0"}
    assert {h.id for h in idx.search_vectors(q, 32, filter={"lang": "zh"})[0]} == {f"d{i}" for i in range(0, 30, 3)}
    idx.backend.close()


def test_documents_without_metadata_are_stored_as_an_empty_object(tmp_path):
    check_documents_without_metadata(tmp_path / "idx")
