"""The REST service's search modes, calibrated probabilities and POST /similarity, on a real server
process with m3e-small; the OpenAPI document follows what the loaded index can do."""

import httpx
import numpy as np
import pytest

from ._api_util import Server, assert_error, demo_docs
from .conftest import STS

BANK_QUERY = "信用卡额度太低能调高吗"


@pytest.fixture(scope="module")
def full_index(tmp_path_factory, m3e_encoder):
    from embedkit.index import EmbedIndex

    base = tmp_path_factory.mktemp("sim")
    pairs = base / "pairs.tsv"
    pairs.write_text("\n".join((STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:300])
                     + "\n", encoding="utf-8")
    idx = EmbedIndex.build(base / "idx", demo_docs(every=4), encoder=m3e_encoder, lexical=True, tune_pairs=pairs)
    idx.calibrate(pairs)
    return base / "idx", idx


@pytest.fixture(scope="module")
def client(full_index, tmp_path_factory):
    # fp32 torch: scores are compared with the library's to 1e-5
    srv = Server(full_index[0], tmp_path_factory.mktemp("sim-log") / "server.log", "--backend", "torch").wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            yield c
    finally:
        srv.stop()


def test_similarity_endpoint_matches_the_library(client, full_index):
    _, idx = full_index
    pairs = [["花呗怎么还款", "花呗如何还款"], ["花呗怎么还款", "今天天气很好"]]
    r = client.post("/similarity", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["calibrated"] is True and len(body["results"]) == 2
    lib = idx.similarity(pairs)
    for got, want in zip(body["results"], lib):
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5) and got["match"] == want["match"]
    assert body["results"][0]["probability"] > body["results"][1]["probability"]
    assert_error(client.post("/similarity", json={"pairs": [["只有一个"]]}), 422, None, "pairs")
    assert_error(client.post("/similarity", json={"pairs": []}), 422, None, "pairs")


def test_search_modes_and_probabilities(client):
    dense = client.post("/search", json={"query": BANK_QUERY, "top_k": 5}).json()["results"][0]["hits"]
    assert all(0 <= h["probability"] <= 1 and isinstance(h["match"], bool) for h in dense)
    keep = client.post("/search", json={"query": BANK_QUERY, "top_k": 5, "min_probability": 0.5}).json()
    assert [h["id"] for h in keep["results"][0]["hits"]] == [h["id"] for h in dense if h["probability"] >= 0.5]
    for mode in ("lexical", "hybrid"):
        r = client.post("/search", json={"query": BANK_QUERY, "top_k": 5, "mode": mode})
        assert r.status_code == 200, r.text
        hits = r.json()["results"][0]["hits"]
        assert hits and all("probability" not in h for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    doc = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]
    assert doc["mode"]["enum"] == ["dense", "lexical", "hybrid"] and "maximum" in str(doc["min_probability"])


def test_plain_index_documents_and_refuses_what_it_lacks(tmp_path, m3e_encoder):
    from embedkit.index import EmbedIndex

    EmbedIndex.build(tmp_path / "plain", demo_docs(every=12), encoder=m3e_encoder)
    srv = Server(tmp_path / "plain", tmp_path / "server.log").wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            doc = c.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]
            assert doc["mode"]["enum"] == ["dense"] and doc["min_probability"]["type"] == "null"
            msg = assert_error(c.post("/search", json={"query": "信用卡", "mode": "hybrid"}), 422)
            assert "embedkit index lexical" in msg
            msg = assert_error(c.post("/search", json={"query": "信用卡", "min_probability": 0.4}), 422)
            assert "embedkit calibrate" in msg
            sims = c.post("/similarity", json={"pairs": [["信用卡", "信用卡"]]}).json()
            assert sims["calibrated"] is False and sims["results"][0]["probability"] is None
            assert np.isclose(sims["results"][0]["score"], 1.0, atol=1e-5)
    finally:
        srv.stop()
