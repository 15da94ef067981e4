import json

import pytest
from conftest import LABELS, tiny_model

from trl_gta import GTAClassifier
from trl_gta.predict_files import BadRow, BadRowError, input_format_of, predict_file, prediction_record, read_texts


def test_formats_follow_the_extension_unless_named(tmp_path):
    assert [input_format_of(name) for name in ("a.jsonl", "a.JSON", "a.csv", "a.txt")] == [
        "jsonl",
        "jsonl",
        "csv",
        "txt",
    ]
    assert input_format_of("a.data", "csv") == "csv"
    with pytest.raises(ValueError, match="Cannot tell the format"):
        input_format_of("a.data")
    with pytest.raises(ValueError, match="input_format must be"):
        input_format_of("a.txt", "xml")


def test_jsonl_bad_rows_are_named_by_line(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = [
        b'\xef\xbb\xbf{"text": "first", "id": 1}',  # a byte-order mark is not part of the row
        b"{not json",
        b"[1, 2]",
        b'{"body": "no text field"}',
        b'{"text": 7}',
        b'{"text": " "}',
        b"",
        b'{"text": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"text": "last \\u00e9"}',
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(BadRowError, match=r"in.jsonl line 2: not valid JSON"):
        read_texts(str(path))
    result = read_texts(str(path), skip_bad_rows=True)
    assert result.texts == ["first", "last \u00e9"] and result.lines == [1, 9]
    assert result.bad_rows == [
        BadRow(2, "not valid JSON (Expecting property name enclosed in double quotes)"),
        BadRow(3, "not a JSON object"),
        BadRow(4, "no field 'text'"),
        BadRow(5, "field 'text' is not a string"),
        BadRow(6, "empty text"),
        BadRow(7, "empty line"),
        BadRow(8, "not valid UTF-8"),
    ]
    assert read_texts(str(path), text_field="body", skip_bad_rows=True).texts == ["no text field"]


def test_csv_rows_quotes_and_bad_rows(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text\r\n1,"one, with a comma"\r\n2,"two\nlines"\r\n3,\r\n4,caf\xe9\r\n5,five\r\n6\r\n')
    result = read_texts(str(path), skip_bad_rows=True)
    assert result.texts == ["one, with a comma", "two\nlines", "five"]
    assert result.lines == [2, 4, 7]  # a record's line is the one it ends on
    assert result.bad_rows == [BadRow(5, "empty text"), BadRow(6, "not valid UTF-8"), BadRow(8, "no field 'text'")]
    with pytest.raises(ValueError, match="no column 'body'"):
        read_texts(str(path), text_field="body", skip_bad_rows=True)


def test_plain_text_one_text_per_line(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"first\r\nsecond, with a comma\r\n\r\n\xff\xfe\r\nlast")
    with pytest.raises(BadRowError, match="line 3: empty text"):
        read_texts(str(path))
    result = read_texts(str(path), skip_bad_rows=True)
    assert (result.texts, result.lines) == (["first", "second, with a comma", "last"], [1, 2, 5])
    assert result.bad_rows == [BadRow(3, "empty text"), BadRow(4, "not valid UTF-8")]


def test_predict_file_from_python_with_a_classifier(tmp_path, tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer).eval(), tokenizer, LABELS)
    texts = ["wake me up", "play jazz", "will it rain"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts))
    out = tmp_path / "out.jsonl"
    result = predict_file(classifier, str(source), str(out), "adaptive", confidence_threshold=0.5, progress=False)
    assert (result.written, result.resumed_from, result.bad_rows) == (3, 0, [])
    expected = classifier.predict(texts, mode="adaptive", batch_size=16, guess_batch_size=16, confidence_threshold=0.5)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [json.loads(json.dumps(prediction_record(p, i + 1))) for i, p in enumerate(expected)]
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["mode"] == "adaptive"
    again = predict_file(classifier, str(source), str(out), "adaptive", confidence_threshold=0.5, progress=False)
    assert (again.written, again.resumed_from) == (3, 3)
    with pytest.raises(ValueError, match="must not be the input"):
        predict_file(classifier, str(source), str(source), progress=False)
