"""Long-document retrieval evaluation (``embedkit eval --documents``): the SQuAD and BEIR loaders, one
real index per reading setting with the real m3e-small, metrics from ir-measures, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from embedkit.errors import InputError
from embedkit.evaluation.documents import evaluate_task, load_task, parse_setting
from embedkit.evaluation.retrieval import ir_metrics

from .conftest import M3E, ROOT, SHARED

TRIAL = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"


@pytest.fixture(scope="module")
def small_squad(tmp_path_factory):
    """The first 24 paragraphs of CMRC 2018 trial, as a SQuAD-style file."""
    data = json.loads(TRIAL.read_text(encoding="utf-8"))["data"]
    out, n = [], 0
    for art in data:
        paras = art["paragraphs"][:max(0, 24 - n)]
        if paras:
            out.append({"title": art.get("title", ""), "paragraphs": paras})
            n += len(paras)
    path = tmp_path_factory.mktemp("squad") / "small.json"
    path.write_text(json.dumps({"version": "x", "data": out}, ensure_ascii=False), encoding="utf-8")
    return path


def test_squad_loader_concatenates_in_file_order(small_squad):
    one = load_task(small_squad)
    four = load_task(small_squad, concat=4)
    assert len(one.docs) == 24 and len(four.docs) == 6 and len(one.queries) == len(four.queries)
    assert four.docs[1].text == "\n".join(d.text for d in one.docs[4:8])
    # a question's relevant document is the one holding its paragraph
    for q, rel in zip(one.queries[:20], one.relevant[:20]):
        assert rel == [one.relevant[one.queries.index(q)][0]]
    assert [r[0] for r in four.relevant] == [f"d{int(r[0][1:]) // 4}" for r in one.relevant]
    assert four.name == "small-concat4"


def test_beir_loader(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in [
        {"_id": "a", "title": "标题", "text": "正文一"}, {"_id": "b", "text": "正文二"}]), encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        {"_id": "q1", "text": "问题一"}, {"_id": "q2", "text": "问题二"}, {"_id": "q3", "text": "无关"}]),
        encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tb\t2\nq3\ta\t0\n")
    t = load_task(tmp_path)
    assert [d.text for d in t.docs] == ["标题\n正文一", "正文二"]
    assert t.queries == ["问题一", "问题二"] and t.relevant == [["a"], ["b"]]
    with pytest.raises(InputError, match="qrels/dev.tsv' is missing"):
        load_task(tmp_path, split="dev")


@pytest.mark.parametrize("spec, err", [("chunks", "is not truncate"), ("passages:x", "numbers expected"),
                                       ("truncate:1:2", "is not truncate")])
def test_bad_settings(spec, err):
    with pytest.raises(InputError, match=err):
        parse_setting(spec)


@pytest.mark.slow
def test_passages_read_concatenated_documents_in_full(small_squad, m3e_encoder):
    task = load_task(small_squad, concat=4)
    rows = evaluate_task(task, model=str(M3E), settings=["truncate", "passages"], modes=("dense", "lexical"))
    by = {(r["setting"], r["mode"]): r for r in rows}
    trunc, pas = by[("truncate", "dense")], by[("passages", "dense")]
    assert trunc["vectors_per_doc"] == 1.0 and pas["vectors_per_doc"] > 5
    assert pas["index_bytes"] > trunc["index_bytes"] and pas["build_seconds"] > 0
    assert pas["mrr@10"] > trunc["mrr@10"] + 10  # the first 64 tokens of 4 paragraphs miss most answers
    assert by[("passages", "lexical")]["mrr@10"] == by[("truncate", "lexical")]["mrr@10"]  # BM25 reads whole texts
    for r in rows:
        assert 0 <= r["recall@1"] <= r["recall@10"] <= 100 and r["mrr@10"] >= r["recall@1"]


@pytest.mark.slow
def test_metrics_are_ir_measures_over_the_index_search(small_squad, m3e_encoder, tmp_path):
    from embedkit.index import EmbedIndex

    task = load_task(small_squad)
    row = evaluate_task(task, model=str(M3E), settings=["passages"])[0]
    idx = EmbedIndex.build(tmp_path / "i", task.docs, encoder=m3e_encoder)
    want = ir_metrics([[h.id for h in hits] for hits in idx.search(task.queries, 10)], task.relevant)
    assert row["mrr@10"] == round(100 * want["mrr@10"], 2) and row["ndcg@10"] == round(100 * want["ndcg@10"], 2)


@pytest.mark.slow
def test_cli_writes_the_table_and_json(small_squad, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "embedkit.cli", "eval", "--documents", str(small_squad), "--models", str(M3E),
                        "--read", "passages", "--concat", "1,4", "--mode", "dense,hybrid", "--tune-documents",
                        str(small_squad), "--max-queries", "40", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "documents.json").read_text())
    assert [(x["task"], x["mode"]) for x in res["rows"]] == [("small", "dense"), ("small", "hybrid"),
                                                             ("small-concat4", "dense"), ("small-concat4", "hybrid")]
    assert 0 <= res["hybrid"]["weight"] <= 1 and res["hybrid"]["tuned_on"] == "small"
    assert "| small-concat4 | passages | hybrid |" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "embedkit.cli", "eval", "--documents", str(small_squad), "--read",
                          "pages"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and "setting 'pages' is not truncate" in bad.stderr


def test_settings_keep_the_index_defaults_unless_given():
    assert parse_setting("passages") == {"label": "passages", "split": "passages", "passage_tokens": None,
                                         "passage_overlap": None}
    assert parse_setting("passages:32:8")["passage_overlap"] == 8
    assert parse_setting("truncate:512") == {"label": "truncate:512", "split": "truncate", "max_length": 512}
