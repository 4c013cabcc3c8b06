"""rasd on Ray Data: a callable class for `Dataset.map_batches` with an actor pool.

Each actor loads the Extractor once (from a local directory or the Hub
cache) and runs onnxruntime on as many threads as the CPUs Ray gives it,
so N actors never oversubscribe the cores. Use it in your own pipeline:

    import ray
    from rasd.ray_adapter import RasdPredictor

    ds = ray.data.read_parquet("s3://bucket/news/")            # needs "id" and "text" columns
    out = ds.map_batches(RasdPredictor, batch_size=64, num_cpus=2,
                         compute=ray.data.ActorPoolStrategy(size=4),
                         fn_constructor_kwargs={"model": "org/rasd-me5-small", "threads": 2})
    out.write_parquet("s3://bucket/rasd/")                    # id, record (the JSONL record as a string)

Rows with a null or empty text get an error record instead of a prediction
(the batch is never dropped). `rasd batch --engine ray` uses this class.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

import numpy as np

from .sinks import dumps


class RasdPredictor:
    """Batch in: columns `text_column` and `id_column`. Batch out: `id` and `record` (JSON string)."""

    def __init__(self, model: str, threads: int = 1, revision: Optional[str] = None, quantized: bool = True,
                 batch_size: int = 16, min_entity_score: float = 0.0, min_relation_score: float = 0.0,
                 text_column: str = "text", id_column: str = "id"):
        from .extractor import Extractor
        self.extractor = Extractor.from_pretrained(model, revision=revision, quantized=quantized, threads=threads,
                                                   min_entity_score=min_entity_score,
                                                   min_relation_score=min_relation_score)
        self.batch_size, self.text_column, self.id_column = batch_size, text_column, id_column

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        texts = list(batch[self.text_column])
        ids = [str(i) for i in batch[self.id_column]] if self.id_column in batch else \
            [str(i) for i in range(len(texts))]
        good = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        docs = iter(self.extractor.extract_batch([texts[i] for i in good], batch_size=self.batch_size,
                                                 doc_ids=[ids[i] for i in good]) if good else [])
        good_set = set(good)
        records: List[str] = []
        for i, t in enumerate(texts):
            if i in good_set:
                records.append(dumps(next(docs).to_dict()))
            else:
                records.append(dumps({"id": ids[i], "error": "text is null or empty" if not isinstance(t, str) or
                                      not t.strip() else "bad text"}))
        return {"id": np.array(ids, dtype=object), "record": np.array(records, dtype=object)}


def records_of(batch: Dict[str, np.ndarray]) -> List[dict]:
    """The JSONL records of an output batch of RasdPredictor."""
    return [json.loads(r) for r in batch["record"]]
