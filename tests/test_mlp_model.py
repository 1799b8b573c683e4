"""model.architecture=onehot_mlp: Prieto et al.'s MLP on one-hot operands, as a groktransfer model."""

from __future__ import annotations

import math

import torch
from torch import nn

from groktransfer.model.mlp import OneHotMLP, OneHotMLPConfig
from groktransfer.tasks.modular import Task

P = 13


def _model(seed: int = 0, **kw) -> OneHotMLP:
    return OneHotMLP(OneHotMLPConfig(n_inputs=2, d_input=P, d_vocab_out=P, d_hidden=[20, 16], **kw), seed=seed)


def test_logits_equal_a_torch_mlp_on_the_concatenated_one_hot_codes() -> None:
    """Their network: Linear(2p, 20) -> ReLU -> Linear(20, 16) -> ReLU -> Linear(16, p), no biases,
    on concat(one_hot(a), one_hot(b)); with our weights it gives our logits."""
    ours = _model(seed=3)
    theirs = nn.Sequential(nn.Linear(2 * P, 20, bias=False), nn.ReLU(), nn.Linear(20, 16, bias=False), nn.ReLU(),
                           nn.Linear(16, P, bias=False))  # fmt: skip
    with torch.no_grad():
        theirs[0].weight.copy_(ours.input.W.T)
        theirs[2].weight.copy_(ours.hidden[0].W.T)
        theirs[4].weight.copy_(ours.readout.W.T)
    task = Task("add", P, 0.4, 0)
    a, b = task.pairs
    one_hot = torch.cat([nn.functional.one_hot(a, P), nn.functional.one_hot(b, P)], dim=1).float()
    torch.testing.assert_close(ours.forward_last(task.tokens), theirs(one_hot), atol=1e-5, rtol=1e-5)


def test_init_is_torch_linear_default_and_a_component_reinit_is_a_fresh_models() -> None:
    model = _model(seed=1, bias=True)
    for layer in (model.input, model.hidden[0], model.readout):
        bound = 1 / math.sqrt(layer.W.shape[0])
        assert float(layer.W.detach().abs().max()) <= bound and float(layer.W.detach().abs().max()) > 0.9 * bound
        assert float(layer.b.detach().abs().max()) <= bound
    other = _model(seed=2, bias=True)
    other.reinit_component("hidden", 1)
    assert torch.equal(other.hidden[0].W, model.hidden[0].W) and not torch.equal(other.input.W, model.input.W)
    assert not any(n.endswith(".b") for n, _ in _model().named_parameters())  # bias=False: no bias at all


def test_stacked_forward_gives_each_member_its_own_logits() -> None:
    models = [_model(seed=s) for s in (0, 1, 2)]
    params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]) for n, _ in models[0].named_parameters()}
    tokens = Task("subtract", P, 0.4, 0).tokens
    stacked = OneHotMLP.stacked_forward_last(models[0].config)(params, tokens.expand(3, -1, -1))
    for k, m in enumerate(models):
        torch.testing.assert_close(stacked[k], m.forward_last(tokens))


def test_task_problems_and_the_fourier_readings() -> None:
    from groktransfer.tasks.family import TaskShape

    shape = TaskShape("add, p=13", d_vocab=14, d_vocab_out=13, seq_len=3)
    assert OneHotMLP.task_problems(OneHotMLPConfig(d_input=12), shape)  # operands up to 12 need 13
    assert not OneHotMLP.task_problems(OneHotMLPConfig(d_input=13), shape)
    model = _model()
    logits, neurons = model.last_position_activations(Task("add", P, 0.4, 0).tokens)
    assert logits.shape == (P * P, P) and neurons.shape == (P * P, 16)
    assert model.token_embedding().shape == (P, 20) and model.neuron_logit_weights().shape == (16, P)
