"""The backend contract of tests/test_index_contract.py, run against Milvus Lite (a real embedded
Milvus, one database inside each index directory)."""

import pytest

from embedkit.index import EmbedIndex

from .conftest import FakeEncoder
from .test_index_contract import (DIM, data, test_add_then_delete_then_reload,  # noqa: F401 (collected here)
                                  test_bad_k_and_dimension, test_build_records_manifest,
                                  test_filters_return_only_matching_metadata, test_recall_at_10_against_exact_numpy,
                                  test_null_filter_matches_null_or_missing, test_save_load_round_trip_identical,
                                  test_scores_are_sorted_and_ids_are_strings)

MILVUS_KINDS = ["milvus", "milvus:ivf-flat", "milvus:hnsw"]


@pytest.fixture(scope="module", params=MILVUS_KINDS)
def built(request, data, tmp_path_factory):  # noqa: F811 - replaces the FAISS parametrisation
    docs, table, _ = data
    d = tmp_path_factory.mktemp(request.param.replace(":", "-")) / "idx"
    idx = EmbedIndex.build(d, iter(docs), encoder=FakeEncoder(DIM, table), index=request.param, chunk_size=700)
    yield request.param, d, idx
    idx.backend.close()
