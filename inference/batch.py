"""`rasd batch`: a whole archive into output shards, on this machine or on Ray.

    rasd batch --engine local --model M --input news/ --output preds/
    rasd batch --engine ray --num-actors 4 --address auto --model M --input news/ --output preds/

Both engines read the inputs with rasd.sources, stream them through
rasd.stream in chunks of --shard-size documents and write one shard per
chunk (part-00000.jsonl, ... or .parquet), in input order, with the very
records `rasd predict` writes. The local engine predicts in this process.
The Ray engine sends each chunk to a Ray Data actor pool
(rasd.ray_adapter.RasdPredictor): every actor loads the model once per
chunk and runs onnxruntime on the CPUs Ray reserves for it.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List

from .stream import Predictor, extractor_predictor

RAY_HINT = "the Ray engine needs Ray: pip install 'rasd[ray]'"


def add_batch_parser(sub) -> None:
    from .cli import _input_args, _model_args
    b = sub.add_parser("batch", help="predict an archive into JSONL or Parquet shards, locally or on Ray")
    _input_args(b)
    _model_args(b)
    b.add_argument("--output", required=True, help="output directory for part-NNNNN shards")
    b.add_argument("--output-format", choices=["jsonl", "parquet"], default="jsonl")
    b.add_argument("--shard-size", type=int, default=10_000, help="records per shard; also the documents one "
                                                                   "Ray dataset holds")
    b.add_argument("--engine", choices=["local", "ray"], default="local")
    b.add_argument("--num-actors", type=int, default=1, help="ray: actors, each with its own model copy")
    b.add_argument("--cpus-per-actor", type=int, default=0, help="ray: CPUs (and onnxruntime threads) per actor "
                                                                 "(0 = the cluster's CPUs / actors)")
    b.add_argument("--ray-batch-size", type=int, default=64, help="ray: documents per map_batches call")
    b.add_argument("--address", default=None, help="ray: join this cluster ('auto' = the running one); default "
                                                   "starts a local Ray on this machine")
    b.add_argument("--skip-errors", action="store_true", help="write an error record for bad inputs instead of "
                                                              "stopping")
    b.add_argument("--progress", action="store_true", help="show progress on stderr (default: when a terminal)")
    b.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    from .cli import _progress, _stream_setup
    from .hub import ModelFilesError
    from .sinks import ShardSink
    from .sources import InputError, iter_inputs
    from .stream import BadInput, run_stream
    if "-" in (args.input or ["-"]):
        print("error: rasd batch reads files, directories or globs (--input), not stdin", file=sys.stderr)
        return 2
    setup = _stream_setup(args)
    if isinstance(setup, int):
        return setup
    paths, total = setup
    try:
        sink = ShardSink(args.output, args.output_format, args.shard_size)
        predict, stop = (_ray_predictor(args) if args.engine == "ray" else _local_predictor(args))
    except (InputError, ModelFilesError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = _progress(args, total)
    try:
        counts = run_stream(iter_inputs(paths, args.format, args.text_column, args.id_column), predict, sink.write,
                            chunk_size=args.shard_size, skip_errors=args.skip_errors, progress=progress)
    except (BadInput, InputError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        sink.close()
        stop()
    print(f"{counts.predicted} document(s) predicted, {counts.errors} error record(s), {len(sink.shards)} "
          f"shard(s) in {args.output}", file=sys.stderr)
    return 0


def _local_predictor(args):
    from .cli import _load_extractor
    return extractor_predictor(_load_extractor(args), args.batch_size), lambda: None


def _ray_predictor(args):
    """A Predictor that runs each chunk through a Ray Data actor pool, and the function that shuts Ray down."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HINT) from None
    from .hub import resolve_model_dir
    if args.num_actors < 1:
        raise ValueError("--num-actors must be >= 1")
    model = args.model
    if not args.address:  # one machine: resolve (download) once here, so actors do not race on the cache
        model = resolve_model_dir(args.model, revision=args.revision, quantized=not args.fp32)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, **({} if args.address else {"num_cpus": _local_cpus()}))
    cpus = args.cpus_per_actor or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.num_actors)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    kwargs = dict(model=model, threads=cpus, revision=args.revision if args.address else None,
                  quantized=not args.fp32, batch_size=args.batch_size, min_entity_score=args.min_entity_score,
                  min_relation_score=args.min_relation_score)
    predict = ray_chunk_predictor(kwargs, args.num_actors, cpus, args.ray_batch_size)
    return predict, (ray.shutdown if started else (lambda: None))


def ray_chunk_predictor(constructor_kwargs: dict, num_actors: int, cpus_per_actor: int,
                        batch_size: int = 64) -> Predictor:
    import json

    import ray

    from .ray_adapter import RasdPredictor

    def predict(texts: List[str], ids: List[str]) -> List[dict]:
        items = [{"id": i, "text": t} for i, t in zip(ids, texts)]
        # Enough blocks that every actor gets work; a block is never split across actors.
        blocks = max(1, min(len(items) // max(1, batch_size // 4), num_actors * 8))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        out = ds.map_batches(RasdPredictor, batch_size=batch_size, num_cpus=cpus_per_actor,
                             compute=ray.data.ActorPoolStrategy(size=num_actors),
                             fn_constructor_kwargs=constructor_kwargs, batch_format="numpy")
        return [json.loads(r) for b in out.iter_batches(batch_format="numpy", batch_size=None) for r in b["record"]]
    return predict


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

