"""The moving average of the weights (rasd_train.averaging): its update rule, the swap in and out, checkpoints, and
that training evaluates and saves the averaged weights when asked."""
import pytest
import torch
from torch import nn

from rasd_train.averaging import WeightAverage


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)  # a frozen parameter gets no shadow
    return net


def test_update_follows_the_rule_with_its_warm_up():
    net = _net()
    avg = WeightAverage(net, 0.9)
    assert avg.names == ["0.bias", "1.weight", "1.bias"]
    start = net[1].weight.detach().clone()
    for n in range(1, 4):
        with torch.no_grad():
            net[1].weight.add_(1.0)
        before = avg.shadow[1].clone()
        avg.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        assert torch.allclose(avg.shadow[1], d * before + (1 - d) * net[1].weight)
    assert not torch.allclose(avg.shadow[1], start) and not torch.allclose(avg.shadow[1], net[1].weight)


def test_applied_swaps_the_average_in_and_restores_the_live_weights_even_on_error():
    net = _net()
    avg = WeightAverage(net, 0.5)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for s in avg.shadow:
            s.fill_(7.0)
    with avg.applied(net):
        assert torch.all(net[1].weight == 7.0) and torch.all(net[0].bias == 7.0)
        assert torch.equal(net[0].weight, live["0.weight"])  # frozen: untouched
    with pytest.raises(RuntimeError):
        with avg.applied(net):
            raise RuntimeError("evaluation failed")
    for k, v in net.state_dict().items():
        assert torch.equal(v, live[k]), k


def test_state_round_trips_and_a_different_model_is_refused():
    net = _net()
    avg = WeightAverage(net, 0.99)
    avg.update(net)
    other = WeightAverage(_net(), 0.5)
    other.load_state_dict(avg.state_dict())
    assert other.decay == 0.99 and other.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(other.shadow, avg.shadow))
    unfrozen = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="averaged other parameters"):
        WeightAverage(unfrozen, 0.5).load_state_dict(avg.state_dict())
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \(0, 1\)"):
        WeightAverage(net, 1.0)


def test_training_evaluates_and_saves_the_averaged_weights(tiny_config_path, tmp_path):
    """The saved best model is the average held in the checkpoint, not the live weights beside it."""
    from safetensors.torch import load_file
    from rasd_train.config import load_config
    from rasd_train.train import train
    cfg = load_config(tiny_config_path, {"train.output_dir": str(tmp_path / "run"), "train.max_steps": 6,
                                         "train.eval_every": 6, "train.ema_decay": 0.9, "train.calibrate": False})
    train(cfg)
    best = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    ckpt = tmp_path / "run" / "checkpoint"
    live = load_file(str(ckpt / "model.safetensors"))
    state = torch.load(str(ckpt / "custom_checkpoint_0.pkl"), weights_only=True)
    assert state["updates"] == 6
    named = dict(zip(state["names"], state["shadow"]))
    moved = 0
    for name, shadow in named.items():
        assert torch.allclose(best[name], shadow), name
        moved += not torch.allclose(live[name], shadow)
    assert moved > len(named) // 2  # the live weights are not the average


def test_ema_decay_is_a_checked_train_setting(tiny_config_path):
    from rasd_train.config import load_config
    assert load_config(tiny_config_path).train.ema_decay == 0.0  # off unless asked
    assert load_config(tiny_config_path, {"train.ema_decay": "0.995"}).train.ema_decay == 0.995
