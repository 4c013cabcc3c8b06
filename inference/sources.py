"""Input documents, read lazily: JSONL, plain text and Parquet files, directories and globs.

Every input becomes an InputRecord (id, text or error, where). Nothing is
read before it is needed, so an archive of any size streams through in
constant memory; `where` names the file and line (or row) for every error.

Default ids: a JSONL line without "id" is `line-N` and a Parquet row
without an id column is `row-N`; with several input files the file's stem
is prefixed (`2024-05:line-7`) so ids stay unique across files.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".txt": "text", ".parquet": "parquet"}
PARQUET_HINT = "reading or writing Parquet needs pyarrow: pip install 'rasd[parquet]'"


class InputError(ValueError):
    """A problem with the inputs as a whole (a missing file or column), as opposed to one bad record."""


@dataclass
class InputRecord:
    id: str
    text: Optional[str]
    error: Optional[str]
    where: str


def expand_inputs(specs: List[str]) -> List[str]:
    """Files named by paths, directories (their .jsonl/.ndjson/.json/.txt/.parquet files, sorted) and globs.
    '-' is stdin."""
    files: List[str] = []
    for spec in specs:
        if spec == "-" or os.path.isfile(spec):
            files.append(spec)
        elif os.path.isdir(spec):
            found = sorted(os.path.join(root, f) for root, _, names in os.walk(spec) for f in names
                           if os.path.splitext(f)[1].lower() in SUFFIXES)
            if not found:
                raise InputError(f"{spec}: directory has no {'/'.join(sorted(SUFFIXES))} files")
            files += found
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                raise InputError(f"{spec}: no file matches this pattern")
            files += found
        else:
            raise InputError(f"{spec}: no such file or directory")
    if files.count("-") > 1:
        raise InputError("stdin ('-') given more than once")
    return files


def file_format(path: str, fmt: str) -> str:
    """The format of one file: the one asked for, else from its suffix, else sniffed from its first byte."""
    if fmt != "auto":
        return fmt
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if path == "-":
        return "sniff"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return "jsonl" if head.startswith(b"{") else "text"


def iter_inputs(paths: List[str], fmt: str = "auto", text_column: str = "text",
                id_column: Optional[str] = None) -> Iterator[InputRecord]:
    """Every input document of `paths` (already expanded), in order."""
    prefix = len(paths) > 1
    for path in paths:
        kind = file_format(path, fmt)
        stem = "stdin" if path == "-" else os.path.splitext(os.path.basename(path))[0]
        label = f"{stem}:" if prefix else ""
        if kind == "parquet":
            yield from _parquet(path, text_column, id_column, label)
        else:
            yield from _lines_or_text(path, kind, stem, label)


def _open_binary(path: str):
    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _lines_or_text(path: str, kind: str, stem: str, label: str) -> Iterator[InputRecord]:
    name = "stdin" if path == "-" else path
    f = _open_binary(path)
    try:
        if kind == "sniff":  # stdin: peek at the first line to choose
            first = f.readline()
            kind = "jsonl" if first.lstrip().startswith(b"{") else "text"
            lines = _chain([first], f)
        else:
            lines = iter(f)
        if kind == "text":
            yield _text_document(b"".join(lines), stem, name)
            return
        for n, raw in enumerate(lines, 1):
            yield parse_jsonl_line(raw, n, f"{name}:{n}", label)
    finally:
        if f is not sys.stdin.buffer:  # never close the process's stdin
            f.close()


def _chain(first, rest):
    yield from first
    yield from rest


def _text_document(raw: bytes, stem: str, name: str) -> InputRecord:
    try:
        text = raw.decode("utf-8").strip("\n")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        return InputRecord(stem, None, f"not UTF-8 ({e.reason} at byte {e.start})", f"{name}:{line}")
    return InputRecord(stem, text, None if text.strip() else "empty input", name)


def parse_jsonl_line(raw: bytes, n: int, where: str, label: str = "") -> InputRecord:
    """One JSONL line (bytes, with or without its newline) as an InputRecord."""
    default_id = f"{label}line-{n}"
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return InputRecord(default_id, None, f"not UTF-8 ({e.reason} at byte {e.start} of the line)", where)
    if not line.strip():
        return InputRecord(default_id, None, "empty line", where)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return InputRecord(default_id, None, f"invalid JSON ({e.msg} at column {e.colno})", where)
    if not isinstance(obj, dict):
        return InputRecord(default_id, None, f"expected a JSON object, got {type(obj).__name__}", where)
    did = obj.get("id", default_id)
    if not isinstance(did, (str, int)) or isinstance(did, bool):
        return InputRecord(default_id, None, f"'id' must be a string or an integer, got {did!r}", where)
    did = str(did)
    text = obj.get("text")
    if not isinstance(text, str):
        got = "no 'text'" if "text" not in obj else f"'text' is {type(text).__name__}, not a string"
        return InputRecord(did, None, got, where)
    if not text.strip():
        return InputRecord(did, None, "empty 'text'", where)
    return InputRecord(did, text, None, where)


def import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(PARQUET_HINT) from None
    return pyarrow


def _parquet(path: str, text_column: str, id_column: Optional[str], label: str,
             batch_rows: int = 1024) -> Iterator[InputRecord]:
    if path == "-":
        raise InputError("Parquet cannot be read from stdin; give a file")
    pa = import_pyarrow()
    pf = pa.parquet.ParquetFile(path)
    names = pf.schema_arrow.names
    for what, col in (("text", text_column), ("id", id_column)):
        if col is not None and col not in names:
            flag = "--text-column" if what == "text" else "--id-column"
            raise InputError(f"{path}: no column {col!r} (columns: {', '.join(names)}); choose one with {flag}")
    text_type = pf.schema_arrow.field(text_column).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise InputError(f"{path}: column {text_column!r} holds {text_type}, not strings")
    if id_column is None and "id" in names:
        id_column = "id"
    columns = [text_column] + ([id_column] if id_column else [])
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        texts = batch.column(text_column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else [None] * len(texts)
        for text, did in zip(texts, ids):
            row += 1
            where = f"{path}:row {row}"
            did = f"{label}row-{row}" if did is None else str(did)
            if text is None:
                yield InputRecord(did, None, "text is null", where)
            elif not text.strip():
                yield InputRecord(did, None, "empty text", where)
            else:
                yield InputRecord(did, text, None, where)
