"""Streaming prediction: input records in, prediction records out, chunk by chunk, in input order.

Memory holds one chunk at a time (its documents, and the encoder states
the relation step needs), so it does not grow with the input. Each chunk's
records are written and flushed before the next chunk is read.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set

from .sources import InputRecord

DEFAULT_CHUNK = 128  # documents per chunk: enough to sort windows by length, small enough to keep memory flat

Predictor = Callable[[List[str], List[str]], List[dict]]  # (texts, ids) -> records


class BadInput(ValueError):
    """A bad input record when errors are not skipped; the message names the place."""


@dataclass
class Counts:
    predicted: int = 0
    errors: int = 0
    skipped: int = 0  # already in the output (--resume)
    error_places: List[str] = field(default_factory=list)


class DuplicateIds:
    """Remembers where each id was seen; a second sighting is an error naming both places."""

    def __init__(self):
        self.seen: Dict[str, str] = {}

    def check(self, rec: InputRecord) -> None:
        first = self.seen.setdefault(rec.id, rec.where)
        if first != rec.where:
            raise BadInput(f"{rec.where}: duplicate id {rec.id!r} (first at {first}); ids must be unique")


def check_inputs(records: Iterable[InputRecord], limit: int = 20) -> tuple:
    """A validation pass before any work: (number of records, messages of the first `limit` bad ones, bad count).
    Duplicate ids raise BadInput at once."""
    dups, bad, n, n_bad = DuplicateIds(), [], 0, 0
    for rec in records:
        n += 1
        dups.check(rec)
        if rec.error:
            n_bad += 1
            if len(bad) < limit:
                bad.append(f"{rec.where}: {rec.error}")
    return n, bad, n_bad


def chunks(records: Iterable[InputRecord], size: int) -> Iterator[List[InputRecord]]:
    it = iter(records)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


def run_stream(records: Iterable[InputRecord], predict: Predictor, write: Callable[[List[dict]], None],
               chunk_size: int = DEFAULT_CHUNK, skip_errors: bool = False, skip_ids: Optional[Set[str]] = None,
               progress: Optional["Progress"] = None) -> Counts:
    """Predict every record not in `skip_ids`, writing each chunk's records in input order as it completes.

    A bad record stops the run (BadInput, after the chunks before it are
    written) unless skip_errors, which writes an error record in its place.
    """
    if chunk_size < 1:
        raise ValueError("chunk size must be >= 1")
    counts, dups, skip_ids = Counts(), DuplicateIds(), skip_ids or set()
    for chunk in chunks(records, chunk_size):
        todo: List[InputRecord] = []
        for rec in chunk:
            dups.check(rec)
            if rec.id in skip_ids:
                counts.skipped += 1
            elif rec.error and not skip_errors:
                raise BadInput(f"{rec.where}: {rec.error}")
            else:
                todo.append(rec)
        good = [r for r in todo if not r.error]
        predicted = iter(predict([r.text for r in good], [r.id for r in good]) if good else [])
        out = [{"id": r.id, "error": f"{r.where}: {r.error}"} if r.error else next(predicted) for r in todo]
        write(out)
        counts.predicted += len(good)
        counts.errors += len(todo) - len(good)
        if progress:
            progress.update(len(chunk))
    return counts


class Progress:
    """Documents done, docs/s and ETA on stderr, redrawn at most twice a second; never on stdout."""

    def __init__(self, total: Optional[int] = None, enabled: bool = True, stream=None):
        self.total, self.enabled, self.stream = total, enabled, stream or sys.stderr
        self.done, self.started, self.last = 0, time.monotonic(), 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.5 or self.done == self.total):
            self.last = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: Optional[float] = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        of = f"/{self.total:,}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            left = max(0, self.total - self.done) / rate
            eta = f"  ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        return f"{self.done:,}{of} documents  {rate:,.1f} docs/s{eta}"

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()


def extractor_predictor(extractor, batch_size: int) -> Predictor:
    """The Extractor as a Predictor: texts and ids in, JSONL records out."""
    def predict(texts: Sequence[str], ids: Sequence[str]) -> List[dict]:
        return [d.to_dict() for d in extractor.extract_batch(list(texts), batch_size=batch_size, doc_ids=list(ids))]
    return predict
