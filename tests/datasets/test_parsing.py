from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.datasets.parsing import RawExample, detect_format, read_examples
from tuneforge.db.tables.datasets import DatasetFormat
from tuneforge.errors import InvalidInput, UnsupportedMediaType

EXAMPLE = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _read(path: Path, fmt: DatasetFormat) -> list[RawExample]:
    return list(read_examples(path, fmt))


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("data.jsonl", DatasetFormat.JSONL),
        ("DATA.JSONL", DatasetFormat.JSONL),
        ("data.json", DatasetFormat.JSONL),
        ("export.v2.csv", DatasetFormat.CSV),
    ],
)
def test_detect_format_by_extension(filename: str, expected: DatasetFormat) -> None:
    head = b"prompt,completion\nhi,yo\n" if expected is DatasetFormat.CSV else b'{"messages": []}\n'
    assert detect_format(filename, head) is expected


@pytest.mark.parametrize("filename", ["data.txt", "data.parquet", "data"])
def test_detect_format_rejects_other_extensions(filename: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        detect_format(filename, b"{}")
    assert ".jsonl" in caught.value.detail and ".csv" in caught.value.detail


@pytest.mark.parametrize(
    "head",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b'{"messages": "caf\xe9"}\n',
        "\ufeff{}".encode("utf-16"),
    ],
)
def test_detect_format_rejects_binary_and_non_utf8(head: bytes) -> None:
    with pytest.raises(InvalidInput):
        detect_format("data.jsonl", head)


def test_detect_format_accepts_a_head_cut_inside_a_character() -> None:
    head = '{"messages": [{"role": "user", "content": "日本"'.encode()[:-2]
    assert detect_format("data.jsonl", head) is DatasetFormat.JSONL


def test_detect_format_rejects_pretty_printed_json() -> None:
    with pytest.raises(InvalidInput, match="JSON Lines"):
        detect_format("data.json", json.dumps([EXAMPLE], indent=2).encode())


def test_detect_format_rejects_csv_header_with_no_layout() -> None:
    with pytest.raises(InvalidInput, match="prompt,completion"):
        detect_format("data.csv", b"question,answer\nhi,yo\n")


def test_detect_format_accepts_csv_header_with_bom_and_odd_case() -> None:
    assert detect_format("data.csv", b"\xef\xbb\xbf System , USER,Assistant\n") is DatasetFormat.CSV


def test_read_examples_streams(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.jsonl", json.dumps(EXAMPLE) + "\n")
    examples = read_examples(path, DatasetFormat.JSONL)
    assert isinstance(examples, Iterator)
    assert next(examples) == RawExample(1, EXAMPLE, None, None)


def test_jsonl_skips_blank_lines_and_keeps_physical_line_numbers(tmp_path: Path) -> None:
    line = json.dumps(EXAMPLE)
    path = _write(tmp_path, "data.jsonl", f"\ufeff{line}\r\n\n   \n{line}\n\t\n{line}")
    examples = _read(path, DatasetFormat.JSONL)
    assert [example.line_number for example in examples] == [1, 4, 6]
    assert all(example.payload == EXAMPLE and example.parse_error is None for example in examples)


def test_jsonl_invalid_json_keeps_the_line_and_says_where(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.jsonl", f'{json.dumps(EXAMPLE)}\n{{"messages": [1 2]}}\n')
    bad = _read(path, DatasetFormat.JSONL)[1]
    assert bad.line_number == 2
    assert bad.payload is None
    assert bad.raw_line == '{"messages": [1 2]}'
    assert bad.error_code == "invalid_json"
    assert bad.parse_error is not None
    assert bad.parse_error.startswith("Invalid JSON:")
    assert bad.parse_error.endswith("at column 17")


def test_jsonl_truncated_line_points_past_its_end(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.jsonl", '{"messages": [\n')
    (bad,) = _read(path, DatasetFormat.JSONL)
    assert bad.parse_error is not None and bad.parse_error.endswith("at column 15")


@pytest.mark.parametrize(
    ("line", "kind"), [("[1, 2]", "an array"), ('"text"', "a string"), ("null", "null")]
)
def test_jsonl_non_object_is_a_data_type_error(tmp_path: Path, line: str, kind: str) -> None:
    path = _write(tmp_path, "data.jsonl", line + "\n")
    (example,) = _read(path, DatasetFormat.JSONL)
    assert (example.payload, example.error_code, example.raw_line) == (None, "data_type", line)
    assert example.parse_error is not None and kind in example.parse_error


def test_jsonl_invalid_utf8_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.jsonl", b'{"messages": "caf\xe9"}\n')
    (example,) = _read(path, DatasetFormat.JSONL)
    assert example.error_code == "invalid_encoding"
    assert example.raw_line == '{"messages": "caf\ufffd"}'


def test_jsonl_rejects_lone_surrogates(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.jsonl", '{"messages": "\\ud800"}\n')
    (example,) = _read(path, DatasetFormat.JSONL)
    assert example.error_code == "invalid_json"


def test_csv_prompt_completion_with_optional_system(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", "Prompt,COMPLETION,system\nHi,Yo,Be nice\nQ,A,\n")
    first, second = _read(path, DatasetFormat.CSV)
    assert first.line_number == 2
    assert first.payload == {
        "messages": [
            {"role": "system", "content": "Be nice"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo"},
        ]
    }
    assert second.line_number == 3
    assert second.payload == {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    }


def test_csv_system_user_assistant_ignores_other_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", "id, system ,user,assistant\n7,S,U,A\n")
    (example,) = _read(path, DatasetFormat.CSV)
    assert example.payload == {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ]
    }


def test_csv_user_assistant_without_system(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", "user,assistant\nU,A\n")
    (example,) = _read(path, DatasetFormat.CSV)
    assert example.payload == {
        "messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    }


def test_csv_messages_and_tools_columns_hold_json(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    cell = json.dumps(EXAMPLE["messages"]).replace('"', '""')
    tools_cell = json.dumps(tools).replace('"', '""')
    path = _write(tmp_path, "data.csv", f'messages,tools\n"{cell}","{tools_cell}"\n"{cell}",\n')
    first, second = _read(path, DatasetFormat.CSV)
    assert first.payload == {**EXAMPLE, "tools": tools}
    assert second.payload == EXAMPLE


def test_csv_bad_json_cell_is_an_error_with_the_raw_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", 'messages\n"[{""role"": }]"\n')
    (example,) = _read(path, DatasetFormat.CSV)
    assert example.payload is None
    assert example.error_code == "invalid_json"
    assert example.raw_line == '"[{""role"": }]"'
    assert example.parse_error is not None and "column 'messages'" in example.parse_error


def test_csv_line_numbers_follow_multiline_cells_and_skip_blank_rows(tmp_path: Path) -> None:
    content = 'prompt,completion\n"two\nlines",ok\n\n,\nnext,row\n'
    path = _write(tmp_path, "data.csv", content)
    first, second = _read(path, DatasetFormat.CSV)
    assert (first.line_number, second.line_number) == (2, 6)
    assert first.payload is not None
    assert first.payload["messages"][0]["content"] == "two\nlines"


def test_csv_wrong_field_count_and_bad_quoting(tmp_path: Path) -> None:
    content = 'prompt,completion\nonly-one\nq,"a"b\nfine,row\n'
    path = _write(tmp_path, "data.csv", content)
    short, quoting, fine = _read(path, DatasetFormat.CSV)
    assert (short.line_number, short.error_code, short.raw_line) == (
        2,
        "invalid_csv_row",
        "only-one",
    )
    assert short.parse_error == "Row has 1 fields; the header has 2"
    assert (quoting.line_number, quoting.error_code) == (3, "invalid_csv_row")
    assert (fine.line_number, fine.payload is not None) == (4, True)


def test_csv_invalid_utf8_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", b"prompt,completion\ncaf\xe9,x\nok,y\n")
    bad, good = _read(path, DatasetFormat.CSV)
    assert (bad.line_number, bad.error_code, bad.raw_line) == (2, "invalid_encoding", "caf\ufffd,x")
    assert good.payload is not None


def test_csv_without_a_known_layout_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", "a,b\n1,2\n")
    with pytest.raises(InvalidInput):
        _read(path, DatasetFormat.CSV)


def test_csv_long_cells_are_read(tmp_path: Path) -> None:
    long_text = "word " * 60_000
    path = _write(tmp_path, "data.csv", f"prompt,completion\n{long_text},ok\n")
    (example,) = _read(path, DatasetFormat.CSV)
    assert example.payload is not None
    assert example.payload["messages"][0]["content"] == long_text
