"""Corpus reading: formats, ids, and every kind of bad input named clearly."""

import pytest

from embedkit.corpus import CorpusStats, read_corpus
from embedkit.errors import InputError


def test_txt_skips_and_counts_empty_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("第一句\n\n   \n第二句\r\n第三句", encoding="utf-8")
    stats = CorpusStats()
    docs = read_corpus(p, stats=stats)
    assert [(d.id, d.text) for d in docs] == [("1", "第一句"), ("4", "第二句"), ("5", "第三句")]
    assert stats.skipped_empty == [2, 3] and "2 empty lines skipped" in stats.summary()


def test_bom_is_ignored(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeff你好\n".encode("utf-8"))
    assert read_corpus(p)[0].text == "你好"


def test_non_utf8_rejected_with_line_and_offset(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("好\n".encode() + "坏".encode("gbk") + b"\n")
    with pytest.raises(InputError, match=r"c.txt:2: not valid UTF-8 \(byte 0xbb at offset 0\)"):
        read_corpus(p)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(InputError, match="has no non-empty text"):
        read_corpus(tmp_path / "e.txt")
    (tmp_path / "w.txt").write_text("\n \n")
    with pytest.raises(InputError, match=r"2 empty lines skipped"):
        read_corpus(tmp_path / "w.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")


def test_jsonl_fields_metadata_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": "甲", "topic": "x"}\n{"id": 7, "text": "乙", "metadata": {"k": 1}}\n'
                 '{"text": "丙"}\n', encoding="utf-8")
    docs = read_corpus(p)
    assert [(d.id, d.text, d.metadata) for d in docs] == [("a", "甲", {"topic": "x"}), ("7", "乙", {"k": 1}),
                                                          ("3", "丙", None)]
    p.write_text('{"id": "a", "body": "甲"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:1: no 'text' field .*--text-field"):
        read_corpus(p)
    assert read_corpus(p, text_field="body")[0].text == "甲"
    p.write_text('{"id": "a", "text": 5}\n')
    with pytest.raises(InputError, match="must be a string"):
        read_corpus(p)
    p.write_text('{"id": "a", "text": "x"\n')
    with pytest.raises(InputError, match="c.jsonl:1: not valid JSON"):
        read_corpus(p)


def test_duplicate_ids_rejected(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": "甲"}\n{"id": "a", "text": "乙"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c.jsonl:2: duplicate id 'a'"):
        read_corpus(p)


def test_tsv_columns_by_index_and_name(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text("qid\tquestion\n q1\t怎么开户\nq2\t怎么销户\n", encoding="utf-8")
    docs = read_corpus(p, column="question", id_column="qid")
    assert [(d.id, d.text) for d in docs] == [(" q1", "怎么开户"), ("q2", "怎么销户")]
    docs = read_corpus(p, column=1)
    assert [d.text for d in docs] == ["question", "怎么开户", "怎么销户"]
    with pytest.raises(InputError, match="not in the header"):
        read_corpus(p, column="answer")
    with pytest.raises(InputError, match="has 2 columns, text column is 5"):
        read_corpus(p, column=5)
