"""Issue 19 through the CLI (real tiny model, real FAISS): a JSONL corpus with NaN metadata fails the build
with the field named and a non-zero exit; `index check` names a damaged file or a NaN row."""

import json

from click.testing import CliRunner

from embedkit.cli import cli

from .conftest import TINY


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)


def test_build_from_a_jsonl_corpus_with_nan_metadata_exits_non_zero_naming_the_field(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "你好世界"}\n{"id": "b", "text": "再见", "metadata": {"score": NaN}}\n',
                      encoding="utf-8")
    r = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", TINY)
    assert r.exit_code != 0
    assert "c.jsonl:2: document 'b': metadata field 'score' is nan" in r.output + r.stderr
    assert "Traceback" not in r.output + r.stderr


def test_index_check_names_a_truncated_segment(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"第{i}篇"}, ensure_ascii=False) + "\n"
                              for i in range(30)), encoding="utf-8")
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "n1", "text": "新的一篇"}, ensure_ascii=False) + "\n", encoding="utf-8")
    d = tmp_path / "idx"
    assert run("index", "build", corpus, "-o", d, "--model", TINY).exit_code == 0
    assert run("index", "add", d, more).exit_code == 0
    seg = next(d.glob("gen-*/seg-*.npz"))
    data = seg.read_bytes()
    seg.unlink()
    seg.write_bytes(data[:50])
    r = run("index", "check", d)
    assert r.exit_code != 0 and seg.name in r.output + r.stderr, r.output + r.stderr
    assert "Traceback" not in r.output + r.stderr and "BadZipFile" not in r.output + r.stderr
