"""The CLI end to end with the real m3e-small from ../shared/models and real FAISS."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli import cli

from .conftest import DEMO_CORPUS, M3E


def run(*args, ok=True):
    r = CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output + r.stderr
    return r


@pytest.fixture(scope="module")
def env():
    os.environ["EMBEDKIT_MODEL"] = str(M3E)
    yield
    os.environ.pop("EMBEDKIT_MODEL", None)


@pytest.fixture(scope="module")
def index_dir(env, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "demo"
    r = run("index", "build", DEMO_CORPUS, "-o", d, "--reduce", "whitening:256", "--index", "hnsw")
    summary = json.loads(r.stdout)
    assert summary["count"] == 361 and summary["dim"] == 256 and summary["reducer"] == "whitening:256"
    return d


def test_query_returns_its_near_duplicate_first(index_dir):
    r = run("search", index_dir, "如何提升信用卡的额度？", "怎么查询我的快递到哪了呢", "-k", "3", "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["query"] for x in lines] == ["如何提升信用卡的额度？", "怎么查询我的快递到哪了呢"]
    assert lines[0]["hits"][0]["id"] == "bank-028"  # its near-duplicate, first
    assert "bank-026" in [h["id"] for h in lines[0]["hits"]]  # and the paraphrase close behind
    assert lines[1]["hits"][0]["id"] == "express-011"
    assert lines[0]["hits"][0]["metadata"]["topic"] == "银行卡与信用卡"


def test_table_output_filters_and_queries_file(index_dir, tmp_path):
    qf = tmp_path / "q.txt"
    qf.write_text("跨行转账多久到账\n\n天气预报说明天下雨吗\n", encoding="utf-8")
    r = run("search", index_dir, "--queries-file", qf, "-k", "2", "--filter", "topic=天气")
    assert r.stdout.count("query:") == 2 and "[weather-" in r.stdout and "[bank-" not in r.stdout


def test_add_search_delete_search(index_dir, tmp_path):
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"id": "x-1", "text": "火星上可以种土豆吗", "metadata": {"topic": "科幻"}},
                              ensure_ascii=False) + "\n", encoding="utf-8")
    assert json.loads(run("index", "add", index_dir, new).stdout)["count"] == 362
    hits = json.loads(run("search", index_dir, "在火星种土豆", "-k", "1", "--json").stdout)["hits"]
    assert hits[0]["id"] == "x-1"
    assert json.loads(run("index", "delete", index_dir, "x-1").stdout)["count"] == 361
    hits = json.loads(run("search", index_dir, "在火星种土豆", "-k", "5", "--json").stdout)["hits"]
    assert "x-1" not in [h["id"] for h in hits]
    info = json.loads(run("index", "info", index_dir).stdout)
    assert info["count"] == 361 and info["encoder"]["model"] == str(M3E.resolve())
    assert info["reducer"]["spec"] == "whitening:256" and info["index"]["type"] == "hnsw"


def test_encode_writes_vectors_and_ids(env, tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("第一句\n\n第二句\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    r = run("encode", src, "-o", out)
    assert json.loads(r.stdout) == {"vectors": str(out), "ids": str(tmp_path / "v.ids.json"), "count": 2,
                                    "dim": 512, "skipped_empty": 1}
    v = np.load(out, allow_pickle=False)
    assert v.dtype == np.float32 and v.shape == (2, 512)
    assert json.loads((tmp_path / "v.ids.json").read_text()) == ["1", "3"]


def test_encode_through_index_query_path(index_dir, tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("信用卡怎么提高额度\n", encoding="utf-8")
    run("encode", src, "-o", tmp_path / "v.npy", "--index", index_dir)
    assert np.load(tmp_path / "v.npy").shape == (1, 256)


def test_k_above_the_count_returns_every_document(index_dir):
    """The one k rule (library, CLI, API): a k above the count returns every document, ranked."""
    r = run("search", index_dir, "查询", "-k", "1000", "--json")
    hits = json.loads(r.stdout.splitlines()[0])["hits"]
    assert len(hits) == 361 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize("args,msg", [
    (["search", "{idx}", "查询", "-k", "0"], "k must be a positive integer, got 0"),
    (["search", "{idx}", "查询", "-k", "-3"], "k must be a positive integer, got -3"),
    (["search", "{idx}", "   "], "query '   ' is empty"),
    (["search", "{tmp}/missing", "查询"], "does not exist"),
    (["index", "delete", "{idx}", "no-such-id"], "'no-such-id' is not in the index"),
    (["index", "build", "{tmp}/bad.txt", "-o", "{tmp}/o1"], "bad.txt:2: not valid UTF-8"),
    (["index", "build", "{tmp}/empty.txt", "-o", "{tmp}/o2"], "has no non-empty text"),
    (["index", "build", "{corpus}", "-o", "{tmp}/o3", "--reduce", "whitening:1024"],
     "whitening:1024 asks for more components than the vectors have dimensions (512)"),
    (["index", "build", "{corpus}", "-o", "{tmp}/o4", "--reduce", "pca:x"], "dimension 'x' is not an integer"),
    (["index", "build", "{corpus}", "-o", "{tmp}/o5", "--model", "{tmp}/nomodel"], "does not exist"),
    (["index", "build", "{corpus}", "-o", "{idx}"], "already holds an index; use --overwrite"),
    (["index", "add", "{idx}", "{corpus}"], "is already in the index"),
])
def test_bad_input_exits_nonzero_with_clear_message(index_dir, tmp_path, args, msg):
    (tmp_path / "bad.txt").write_bytes("好\n".encode() + b"\xff\xfe\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    subst = {"idx": index_dir, "tmp": tmp_path, "corpus": DEMO_CORPUS}
    r = run(*[a.format(**subst) for a in args], ok=False)
    assert r.exit_code == 1
    assert msg in r.stderr and r.stdout == ""
    assert "Traceback" not in r.stderr


def test_real_process_exit_codes_and_streams(index_dir):
    """One real subprocess: results on stdout, logs on stderr, errors give exit 1 and one line."""
    exe = [sys.executable, "-m", "embedkit.cli"]
    ok = subprocess.run(exe + ["search", str(index_dir), "信用卡额度", "-k", "2", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["hits"] and "queries in" in ok.stderr
    bad = subprocess.run(exe + ["search", str(index_dir), "x", "-k", "-3"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip() == "embedkit: error: k must be a positive integer, got -3"


def test_help_imports_neither_torch_nor_faiss():
    code = ("import sys; from embedkit.cli import main\n"
            "for argv in (['--help'], ['index', '--help'], ['search', '--help'], ['eval', '--help'], "
            "['serve', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('LOADED', 'torch' in sys.modules, 'faiss' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LOADED False False" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_lexical_and_hybrid_search_with_the_real_model(index_dir, tmp_path):
    """m3e-small end to end: add the BM25 part with a weight tuned on real LCQMC pairs, then search."""
    import shutil

    from .conftest import STS

    d = tmp_path / "hybrid"
    shutil.copytree(index_dir, d)
    bad = run("search", d, "信用卡额度", "--mode", "hybrid", ok=False)
    assert bad.exit_code == 1 and f"embedkit index lexical {d}" in bad.stderr
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join((STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:200])
                     + "\n", encoding="utf-8")
    out = json.loads(run("index", "lexical", d, "--tune-pairs", pairs).stdout)
    assert out["lexical"] is True and out["fusion"]["tuned_on"] == str(pairs) and 0 <= out["fusion"]["weight"] <= 1
    for mode in ("lexical", "hybrid"):
        r = run("search", d, "如何提升信用卡的额度？", "-k", "3", "--json", "--mode", mode)
        ids = [h["id"] for h in json.loads(r.stdout.splitlines()[0])["hits"]]
        assert "bank-028" in ids, (mode, ids)


def test_logging_setup_touches_only_embedkit_loggers():
    """The CLI's log setup leaves the root level and third-party levels alone; noise is dropped inside
    embedkit's own handler, which replaces (never duplicates) the one an earlier run added."""
    import logging

    from embedkit.cli import OWN_LOGGERS, setup_logging

    root = logging.getLogger()
    third = ("sentence_transformers", "grpc._server", "transformers", "urllib3")
    before = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in third})
    try:
        setup_logging(0, False)
        setup_logging(0, False)
        ours = [h for h in root.handlers if h not in before[1]]
        assert len(ours) == 1 and root.level == before[0]
        assert {n: logging.getLogger(n).level for n in third} == before[2]
        assert logging.getLogger("embedkit").level == logging.INFO
        h = ours[0]

        def passes(name, level, pathname=""):
            return bool(h.filter(logging.LogRecord(name, level, pathname, 1, "m", None, None)))

        assert passes("embedkit.index", logging.INFO) and passes("urllib3", logging.WARNING)
        assert not passes("urllib3", logging.INFO)
        assert not passes("sentence_transformers.SentenceTransformer", logging.WARNING)
        assert not passes("grpc._server", logging.ERROR)
        quantizer = os.path.join("site-packages", "onnxruntime", "quantization", "quantize.py")
        assert not passes("root", logging.WARNING, quantizer) and passes("root", logging.ERROR, quantizer)
        setup_logging(0, True)
        h = next(x for x in root.handlers if x not in before[1])
        assert logging.getLogger("embedkit").level == logging.ERROR and root.level == before[0]
        assert not passes("urllib3", logging.WARNING) and passes("urllib3", logging.ERROR)
    finally:
        for x in [x for x in root.handlers if x not in before[1]]:
            root.removeHandler(x)
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_binary_index_with_rescore_from_the_cli(tmp_path):
    """--index binary --rescore N through the CLI: recorded in the manifest, results still exact-rescored."""
    d = tmp_path / "bin"
    out = json.loads(run("index", "build", DEMO_CORPUS, "-o", d, "--index", "binary", "--rescore", "40").stdout)
    assert out["count"] == 361
    info = json.loads(run("index", "info", d).stdout)
    assert info["index"]["params"]["rescore"] == 40 and info["index"]["bytes_per_vector"]["code"] == 64
    hits = json.loads(run("search", d, "如何提升信用卡的额度？", "-k", "3", "--json").stdout.splitlines()[0])["hits"]
    assert hits[0]["id"] == "bank-028"
