"""Training step cost of config variants, measured A/B on the very same batches.

    python -m rasd_train.steptime configs/me5-small.yaml --variant markers=model.relation_markers=3 \\
        --variant no-attn-dropout=encoder.attention_dropout=0.0 [--threads 2 --rounds 4 --block 6]

Each variant is a name and `;`-separated `key=value` overrides of the config (as `--set`). All variants are built
first, each with its own features of the same documents in the same order, then timed in interleaved blocks of `--block` optimizer steps (forward, backward, clipping, step), the
order reversed every other round, so that a machine whose speed drifts treats them alike. Prints seconds per step
and the ratio to the first variant ("default", the config as written). A benchmark, not a test: run it on an
otherwise idle machine and report the ratios of one run.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import torch
from accelerate import Accelerator

from .config import load_config, parse_overrides
from .train import build_model, build_tokenizer, freeze, load_data, make_loader, make_optimizer, param_groups


def parse_variant(text: str) -> tuple:
    """'name=key=value;key=value' -> (name, {key: value})."""
    name, sep, sets = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--variant {text!r}: expected name=key=value[;key=value...]")
    return name, parse_overrides(filter(None, sets.split(";")), f"--variant {text!r}")


def _setup(config: str, overrides: dict, accelerator: Accelerator):
    cfg = load_config(config, overrides)
    corpus = load_data(cfg)
    tok = build_tokenizer(cfg, [d.text for d in corpus.train])
    torch.manual_seed(0)
    model = build_model(cfg, tok, corpus.scheme)
    if cfg.train.freeze_embeddings or cfg.train.freeze_layers:
        freeze(model, cfg.train.freeze_embeddings, cfg.train.freeze_layers)
    model.train()
    return cfg, corpus, tok, model, make_optimizer(param_groups(model, cfg), accelerator)


def _steps(model, opt, batches, max_grad_norm: float) -> float:
    t0 = time.perf_counter()
    for b in batches:
        model(**b)["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - t0) / len(batches)


def measure(config: str, variants: Dict[str, dict], rounds: int, block: int) -> Dict[str, List[float]]:
    """Seconds per step of each variant, one figure per round."""
    acc = Accelerator()
    setups = {}
    for name, overrides in variants.items():
        cfg, corpus, tok, model, opt = _setup(config, overrides, acc)
        # Each variant's own features (a span head needs its labels) of the same documents in the same order:
        # the sampler and the augmentation are seeded, and a variant changes neither.
        it = iter(make_loader(corpus.train, tok, model, cfg.train)[0])
        setups[name] = (model, opt, cfg.train.max_grad_norm, [next(it) for _ in range(rounds * block)])
    for model, opt, norm, batches in setups.values():  # warm-up: first-call allocations are not a step's cost
        _steps(model, opt, batches[:1], norm)
    times: Dict[str, List[float]] = {k: [] for k in setups}
    for r in range(rounds):
        for name in (list(setups) if r % 2 == 0 else list(setups)[::-1]):
            model, opt, norm, batches = setups[name]
            times[name].append(_steps(model, opt, batches[r * block:(r + 1) * block], norm))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--variant", action="append", default=[], help="name=key=value[;key=value...]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--block", type=int, default=6, help="optimizer steps per variant per round")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = dict([("default", {})] + [parse_variant(v) for v in args.variant])
    if len(variants) != len(args.variant) + 1:
        raise SystemExit("--variant names must be unique and not 'default'")
    times = measure(args.config, variants, args.rounds, args.block)
    base = sum(times["default"])
    print("| variant | s a step | × default | per round |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {sum(ts) / len(ts):.3f} | {sum(ts) / base:.3f} | {', '.join(f'{t:.3f}' for t in ts)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
