"""Where prediction records go: a JSONL file (appendable, for --resume) or a folder of shards.

Records are the JSONL shape of rasd.schema (Document.to_dict), or an error
record {"id", "error"} for an input that could not be read. Every write is
flushed, so an interrupted job leaves only whole records behind.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Iterable, List, Set, TextIO

from .sources import InputError, import_pyarrow


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


class JsonlSink:
    """One JSONL stream: a file (new, or appended to) or stdout."""

    def __init__(self, path: str, append: bool = False):
        self.path = path
        self.out: TextIO = sys.stdout if path == "-" else open(path, "a" if append else "w", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        self.out.write("".join(dumps(r) + "\n" for r in records))
        self.out.flush()

    def close(self) -> None:
        if self.out is not sys.stdout:  # never close the process's stdout
            self.out.close()


def done_ids(path: str) -> Set[str]:
    """Ids already written to a JSONL output, for --resume.

    A last line cut off mid-write (no newline: the job was killed while
    writing) is removed, so appending continues with whole records.
    """
    if not os.path.exists(path):
        return set()
    ids: Set[str] = set()
    with open(path, "rb+") as f:
        good_end = 0
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                f.truncate(good_end)
                print(f"{path}: removed an incomplete last record (line {n}) before resuming", file=sys.stderr)
                break
            try:
                ids.add(str(json.loads(raw)["id"]))
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path}:{n}: not a prediction record; --resume needs the output of an earlier "
                                 f"run of the same command") from None
            good_end += len(raw)
    return ids


class ShardSink:
    """Records in numbered shard files, `shard_size` records each: part-00000.jsonl (or .parquet), ..."""

    def __init__(self, out_dir: str, fmt: str = "jsonl", shard_size: int = 10_000):
        if fmt not in ("jsonl", "parquet"):
            raise ValueError(f"output format must be jsonl or parquet, got {fmt!r}")
        if shard_size < 1:
            raise ValueError("shard size must be >= 1")
        if fmt == "parquet":
            import_pyarrow()
        os.makedirs(out_dir, exist_ok=True)
        old = sorted(f for f in os.listdir(out_dir) if f.startswith("part-"))
        if old:
            raise InputError(f"{out_dir}: already holds shards of an earlier run ({old[0]}, ...); remove them or "
                             f"choose another --output")
        self.out_dir, self.fmt, self.shard_size = out_dir, fmt, shard_size
        self.pending: List[dict] = []
        self.shards: List[str] = []

    def write(self, records: Iterable[dict]) -> None:
        self.pending.extend(records)
        while len(self.pending) >= self.shard_size:
            self._flush(self.pending[:self.shard_size])
            self.pending = self.pending[self.shard_size:]

    def close(self) -> None:
        if self.pending or not self.shards:
            self._flush(self.pending)
            self.pending = []

    def _flush(self, records: List[dict]) -> None:
        path = os.path.join(self.out_dir, f"part-{len(self.shards):05d}.{self.fmt}")
        tmp = path + ".tmp"  # a shard appears whole or not at all
        if self.fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(dumps(r) + "\n" for r in records))
        else:
            write_parquet(tmp, records)
        os.replace(tmp, path)
        self.shards.append(path)


def parquet_schema():
    pa = import_pyarrow()
    entity = pa.struct([("id", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()),
                        ("text", pa.string()), ("score", pa.float64()), ("normalized", pa.string())])
    relation = pa.struct([("head", pa.string()), ("tail", pa.string()), ("label", pa.string()),
                          ("score", pa.float64())])
    # meta varies from record to record (warnings, ...): kept as a JSON string so every shard has one schema.
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("entities", pa.list_(entity)),
                      ("relations", pa.list_(relation)), ("meta", pa.string()), ("error", pa.string())])


def write_parquet(path: str, records: List[dict]) -> None:
    pa = import_pyarrow()
    rows = [{"id": r["id"], "text": r.get("text"), "entities": r.get("entities", []),
             "relations": r.get("relations", []), "meta": dumps(r["meta"]) if r.get("meta") else None,
             "error": r.get("error")} for r in records]
    pa.parquet.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), path)


def read_parquet_records(path: str) -> List[dict]:
    """Parquet shard rows back into the JSONL record shape (fields that are null are left out)."""
    pa = import_pyarrow()
    out = []
    for row in pa.parquet.read_table(path).to_pylist():
        if row["error"] is not None:
            out.append({"id": row["id"], "error": row["error"]})
            continue
        rec = {"id": row["id"], "text": row["text"],
               "entities": [{k: v for k, v in e.items() if v is not None} for e in row["entities"]],
               "relations": [{k: v for k, v in r.items() if v is not None} for r in row["relations"]]}
        if row["meta"]:
            rec["meta"] = json.loads(row["meta"])
        out.append(rec)
    return out
