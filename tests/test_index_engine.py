"""Index-engine details: lazy store registry, IVF sized from the corpus, one filter rule in three renderings."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.filters import Filter
from embedkit.index import EmbedIndex
from embedkit.stores.faiss_backend import nlist_for

from .conftest import ROOT, FakeEncoder, clustered_vectors


def test_importing_the_index_loads_no_backend_library():
    code = ("import sys, embedkit.index, embedkit.stores; "
            "print(json.dumps([m for m in ('faiss', 'pymilvus', 'torch') if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr


def test_ivf_lists_are_sized_for_the_corpus_not_the_sample(tmp_path):
    n = 6000
    x = clustered_vectors(n, 32, seed=1)
    docs = [Doc(str(i), f"t{i}") for i in range(n)]
    enc = FakeEncoder(32, {d.text: x[i] for i, d in enumerate(docs)})
    idx = EmbedIndex.build(tmp_path / "ivf", iter(docs), encoder=enc, index="ivf-flat", fit_sample=500,
                           expected_size=n, chunk_size=1000)
    desc = idx.manifest["index"]
    # ≈ 4·√N for the corpus, capped by FAISS' 39 training vectors per list — not sized from the
    # 500-document fit sample (which would give nlist_for(500, 500) = 12 lists)
    assert desc["params"]["nlist"] == nlist_for(n, n) == min(round(4 * np.sqrt(n)), n // 39) == 153
    assert nlist_for(500, 500) == 12
    assert desc["trained_on"] >= 39 * desc["params"]["nlist"] and idx.manifest["expected_size"] == n
    assert f"IVF{desc['params']['nlist']}," in desc["factory"]


@pytest.mark.parametrize("where", [{"a": None}, {"a": 1}, {"a": True}, {"a": "1"}, {"a": 1.0, "b": "x"},
                                   {"b": None, "a": False}])
def test_filter_renderings_agree(where):
    """The Python rule and the SQLite rendering select the same rows (Milvus runs the contract tests)."""
    metas = [None, {}, {"a": None}, {"a": 1}, {"a": 1.0}, {"a": True}, {"a": False}, {"a": "1"}, {"a": 0},
             {"a": 1, "b": "x"}, {"a": 1.0, "b": None}, {"b": "x"}, {"a": [1]}, {"a": {"x": 1}}]
    flt = Filter.parse(where)
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE docs (i INTEGER, metadata TEXT)")
    con.executemany("INSERT INTO docs VALUES (?, ?)", [(i, None if m is None else json.dumps(m))
                                                      for i, m in enumerate(metas)])
    clause, args = flt.to_sql()
    sql = sorted(r[0] for r in con.execute(f"SELECT i FROM docs WHERE {clause}", args))
    assert sql == [i for i, m in enumerate(metas) if flt.matches(m)]
    assert flt.to_milvus()


@pytest.mark.parametrize("bad,msg", [({}, "non-empty object"), ({"1x": 1}, "plain name"),
                                     ({"a": [1]}, "string, number, boolean or null"),
                                     ({"a": float("nan")}, "finite")])
def test_bad_filters_are_refused_once_for_every_store(bad, msg):
    with pytest.raises(InputError, match=msg):
        Filter.parse(bad)
