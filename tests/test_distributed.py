"""The multi-process (DDP) path: `accelerate launch` with 2 CPU processes on the tiny model."""
import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")
def test_accelerate_launch_two_cpu_processes(tiny_config_path, tmp_path):
    out_dir = tmp_path / "ddp"
    cli = os.path.join(os.path.dirname(sys.executable), "accelerate")
    # `--cpu` alone starts one process; `--multi_gpu` starts torchrun, and with
    # ACCELERATE_USE_CPU each process joins a gloo (MULTI_CPU) group.
    cmd = [cli, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "rasd_train.train", tiny_config_path,
           "--set", f"train.output_dir={out_dir}", "--set", "train.epochs=6", "--set", "train.eval_every=3",
           "--set", "train.num_threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "on 2 process(es)" in res.stdout
    summary = json.loads((out_dir / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["processes"] == 2
    # 8 windows / batch 4 / 2 processes = 1 step per epoch
    assert summary["steps"] == 6
    recs = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum("dev_entity_f1" in r for r in recs) == 2  # written once, by the main process
    assert (out_dir / "model" / "model.safetensors").exists()
