"""The senteval_cn loader on small files with every quirk, and on the real shared files."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from embedkit.errors import InputError
from embedkit.evaluation.data import (available_splits, list_tasks, load_task, read_pairs,
                                      resolve_tasks, task_max_length)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts-zh"


def _write(root: Path, task: str, split: str, text: str) -> Path:
    p = root / task / f"{task}.{split}.data"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode("utf-8"))
    return p


QUIRKY = (
    '在？可以发红包吧？\t"免费领取""饿了么""红包"\t0\n'   # CSV-style quoted field, kept verbatim
    '"""借款失败""了解"\t为什么借款发放失败\t1\n'           # quoted at the start of the line
    '\t只有第二句\t1\n'                                     # empty first sentence
    '只有第一句\t\t0\n'                                     # empty second sentence
    '只有第一句\t   \t0\n'                                  # whitespace-only sentence
    '标签坏了\t标签不是数字\tabc\n'                          # non-numeric label
    '标签为空\t标签为空\t\n'                                # empty label
    '标签是NaN\t标签是NaN\tnan\n'                           # NaN label
    '只有两列\t1\n'                                         # malformed: two fields
    '四列\t四列\t1\t多余\n'                                 # malformed: four fields
    '\n'                                                     # blank line: ignored, not counted
    '花呗怎么还款\t花呗如何还钱\t1\r\n'                      # CRLF line ending
    '今天天气不错\t今天天气很好\t4.5\n'
)


def test_quirks_are_kept_counted_and_never_crash(tmp_path):
    p = _write(tmp_path, "MINE", "test", QUIRKY)
    ps = read_pairs(p)
    assert ps.task == "MINE"
    assert len(ps) == 4
    assert ps.sentences2[0] == '"免费领取""饿了么""红包"'  # exactly as written, quotes included
    assert ps.sentences1[1] == '"""借款失败""了解"'
    assert ps.sentences2[2] == "花呗如何还钱"  # no stray \r
    np.testing.assert_array_equal(ps.scores, [0, 1, 1, 4.5])
    assert ps.skipped == {"empty_sentence": 3, "bad_label": 3, "malformed": 2}
    assert ps.n_rows == 12 and ps.n_skipped == 8
    assert ps.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert ps.skipped_examples[0] == (3, "empty_sentence")


def test_missing_split_and_unknown_task_folder(tmp_path):
    _write(tmp_path, "MYPAIRS", "train", "甲\t乙\t1\n丙\t丁\t0\n")
    _write(tmp_path, "MYPAIRS", "test", "甲\t丙\t0\n乙\t丁\t1\n乙\t丁\t1\n")
    (tmp_path / "not-a-task").mkdir()  # no .data files: not listed
    assert list_tasks(tmp_path) == ["MYPAIRS"]
    assert available_splits(tmp_path, "MYPAIRS") == ["train", "test"]
    splits = load_task(tmp_path, "MYPAIRS")
    assert sorted(splits) == ["test", "train"]  # valid is missing: simply absent
    texts, ia, ib = splits["test"].unique_sentences()
    assert texts == ["甲", "乙", "丙", "丁"]
    assert ia.tolist() == [0, 1, 1] and ib.tolist() == [2, 3, 3]
    assert resolve_tasks(tmp_path, None) == ["MYPAIRS"]
    with pytest.raises(InputError, match=r"unknown task 'NOPE'.*MYPAIRS"):
        resolve_tasks(tmp_path, ["NOPE"])
    with pytest.raises(InputError, match="known task"):
        resolve_tasks(tmp_path, ["PAWSX"])
    with pytest.raises(InputError, match="split 'dev'"):
        load_task(tmp_path, "MYPAIRS", ["dev"])


def test_limit_and_bad_inputs(tmp_path):
    p = _write(tmp_path, "T", "valid", "".join(f"句子{i}\t句子{i + 1}\t{i % 2}\n" for i in range(10)))
    ps = read_pairs(p, limit=3)
    assert len(ps) == 3 and ps.truncated
    assert ps.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()  # of the whole file
    with pytest.raises(InputError, match="limit"):
        read_pairs(p, limit=0)
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "nope.data")
    bad = tmp_path / "T" / "T.test.data"
    bad.write_bytes("好\t坏\t1\n".encode() + b"\xff\xfe\t\xff\t1\n")
    with pytest.raises(InputError, match="not UTF-8.*line 2"):
        read_pairs(bad)
    with pytest.raises(InputError, match="does not exist"):
        list_tasks(tmp_path / "missing")


def test_task_max_length_follows_the_paper():
    assert task_max_length("PAWSX") == 128
    assert task_max_length("STS-B") == 64 and task_max_length("MINE") == 64


def test_real_shared_files_load_with_quoted_rows():
    ps = read_pairs(SHARED / "BQ" / "BQ.test.data")
    assert len(ps) == 10000 and ps.n_skipped == 0
    assert '"免费领取""饿了么""红包"' in ps.sentences2
    stsb = load_task(SHARED, "STS-B", ["test"])["test"]
    assert len(stsb) == 1361 and set(np.unique(stsb.scores)) <= {0, 1, 2, 3, 4, 5}
    assert {"ATEC", "BQ", "LCQMC", "STS-B"} <= set(list_tasks(SHARED))
