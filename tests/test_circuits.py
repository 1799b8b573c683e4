"""Circuit analysis: known answers for the pure functions, a built model, and the report provider.

Nothing is trained: models get hand-built or random weights, run directories are
fabricated after docs/architecture.md (as in ``fixtures_rundirs``), so the known
answers are exact and the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures_rundirs import write_status
from groktransfer.checkpoint import save_checkpoint
from groktransfer.config.schema import ModelConfig
from groktransfer.model import HookedGrokTransformer

P = 11
CFG = ModelConfig(n_heads=4, d_model=32, d_head=8, d_mlp=48, d_vocab=P + 1, d_vocab_out=P)


# --------------------------------------------------------------------------- builders
def single_frequency_model(w: int, p: int = P, seed: int = 0, n_dead: int = 0, cfg: ModelConfig = CFG) -> HookedGrokTransformer:
    """A model whose every live MLP neuron is an affine function of cos/sin(w·a) and
    cos/sin(w·b): all of its variance sits at frequency w.

    Embeddings carry (cos wt, sin wt) in dims 0-1 ('=' is zero); W_Q = W_K = 0 makes
    the last query attend 1/3 to each of a, b, =; head 0 copies dims 0-1 into dims 2-3;
    W_in reads only dims 2-3; a large b_in keeps every ReLU in its linear regime, so
    each neuron is cos(w a + φ) + cos(w b + φ) up to scale and offset. The first
    ``n_dead`` neurons get zero input weights and a negative bias: constant 0, dead.
    """
    model = HookedGrokTransformer(replace(cfg, d_vocab=p + 1, d_vocab_out=p), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        W_E = torch.zeros(p + 1, cfg.d_model)
        W_E[:p, 0] = torch.cos(2 * math.pi * w * t / p).float()
        W_E[:p, 1] = torch.sin(2 * math.pi * w * t / p).float()
        model.embed.W_E.copy_(W_E)
        attn = model.blocks[0].attn
        attn.W_V[0, 0, 0] = attn.W_V[0, 1, 1] = 1.0
        attn.W_O[0, 0, 2] = attn.W_O[0, 1, 3] = 1.0
        mlp = model.blocks[0].mlp
        phase = torch.rand(cfg.d_mlp, generator=gen) * 2 * math.pi
        mlp.W_in[2] = torch.cos(phase)
        mlp.W_in[3] = torch.sin(phase)
        mlp.b_in.fill_(3.0)
        mlp.W_in[:, :n_dead] = 0.0
        mlp.b_in[:n_dead] = -1.0
        mlp.W_out.copy_(torch.randn(cfg.d_mlp, cfg.d_model, generator=gen) / cfg.d_mlp)
        model.unembed.W_U.copy_(torch.randn(cfg.d_model, p, generator=gen))
    return model


def perturbed(model: HookedGrokTransformer, scale: float, seed: int) -> HookedGrokTransformer:
    """A copy of ``model`` with small Gaussian noise on every weight (a 'trained a bit' stand-in)."""
    out = HookedGrokTransformer(model.config, seed=0)
    out.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in out.parameters():
            prm.add_(scale * torch.randn(prm.shape, generator=gen))
    return out


def _config_yaml(condition: str, seed: int, p: int, task: str = "subtract") -> str:
    return (
        f"experiment_name: circ\nseed: {seed}\n"
        f"task:\n  name: {task}\n  p: {p}\n  frac_train: 0.5\n  data_seed: null\n"
        f"model:\n  model_seed: null\n"
        f"transfer:\n  name: {condition}\n  source:\n    task: add\n    p: null\n    frac_train: 0.3\n    source_seed: 0\n"
        f"measures:\n  key_freq_threshold: 0.85\n"
        f"train:\n  max_epochs: 300\n"
    )


def write_run(sweep: Path, job: int, condition: str, seed: int, model: Optional[HookedGrokTransformer],
              p: int, source: Optional[Dict] = None, status: str = "completed") -> Path:
    """A fabricated run dir: status.json, config.yaml, source.json, checkpoints/final.pt."""
    run_dir = sweep / f"{job}_subtract_{condition}_s{seed}"
    write_status(run_dir, condition=condition, seed=seed, status=status, epoch=300, max_epochs=300,
                 thresholds={0.9: 200 if status == "completed" else None},
                 reason=None if status == "completed" else "RuntimeError: loss became NaN")  # fmt: skip
    (run_dir / "config.yaml").write_text(_config_yaml(condition, seed, p))
    st = json.loads((run_dir / "status.json").read_text())
    st.update(p=p, data_seed=seed, model_seed=seed, source_seed=0 if source else None)
    (run_dir / "status.json").write_text(json.dumps(st))
    if source is not None:
        (run_dir / "source.json").write_text(json.dumps(source))
    if model is not None:
        save_checkpoint(run_dir / "checkpoints" / "final.pt", model, epoch=300, metrics={})
    return run_dir


def make_circuit_sweep(root: Path, p: int = P, n_seeds: int = 2) -> Dict[str, object]:
    """Source run (a+b) with a memorised and a grokked checkpoint, and a−b targets:

    * grokked: s0 = exact copy of the grokked checkpoint, s1 = that copy slightly perturbed
      (both keep the source's frequency 3 and neuron lineage);
    * memorized: single-frequency models at w=2 (a different circuit, same lineage);
    * random: s0 at w=4 (independent), s1 random weights;
    * one failed run and one completed run without final.pt (both must be skipped).
    """
    src_dir = root / ".sources" / f"add_p{p}_s0_0123456789abcdef"
    grokked = single_frequency_model(3, p, seed=0, n_dead=4)
    memorised = perturbed(HookedGrokTransformer(replace(CFG, d_vocab=p + 1, d_vocab_out=p), seed=0), 0.0, 0)
    ck_mem = save_checkpoint(src_dir / "checkpoints" / "epoch_000100.pt", memorised, epoch=100, metrics={})
    ck_grok = save_checkpoint(src_dir / "checkpoints" / "epoch_000300.pt", grokked, epoch=300, metrics={})
    save_checkpoint(src_dir / "checkpoints" / "final.pt", grokked, epoch=400, metrics={})
    spec = {"task": {"name": "add", "p": p, "frac_train": 0.3, "data_seed": 0}, "model_seed": 0}
    copied = [k for k in grokked.state_dict()]

    def source_json(cond: str, ck: Path, epoch: int) -> Dict:
        return {"condition": cond, "source_hash": "0123456789abcdef", "source_run_dir": str(src_dir), "spec": spec,
                "chosen": {"condition": cond, "epoch": epoch, "train_acc": 1.0, "test_acc": 1.0 if cond == "grokked" else 0.1,
                           "checkpoint": str(ck), "criteria": {}},
                "components": {c: "copy" for c in ("embed", "pos_embed", "attn", "mlp", "unembed")},
                "plan": {"copied": copied, "frozen": [], "reinitialised": [], "notes": []}}  # fmt: skip

    sweep = root / "sweep"
    job = 0
    for s in range(n_seeds):
        model = grokked if s == 0 else perturbed(grokked, 0.01, s)
        write_run(sweep, job, "grokked", s, model, p, source_json("grokked", ck_grok, 300)); job += 1  # noqa: E702
    for s in range(n_seeds):
        write_run(sweep, job, "memorized", s, single_frequency_model(2, p, seed=10 + s), p,
                  source_json("memorized", ck_mem, 100)); job += 1  # noqa: E702
    for s in range(n_seeds):
        model = single_frequency_model(4, p, seed=20 + s) if s == 0 else HookedGrokTransformer(
            replace(CFG, d_vocab=p + 1, d_vocab_out=p), seed=s)  # fmt: skip
        write_run(sweep, job, "random", s, model, p); job += 1  # noqa: E702
    write_run(sweep, job, "random", n_seeds, None, p, status="failed"); job += 1  # noqa: E702
    write_run(sweep, job, "grokked", n_seeds, None, p, source_json("grokked", ck_grok, 300))
    return {"sweep": sweep, "source_dir": src_dir, "grokked": grokked, "ck_grok": ck_grok, "ck_mem": ck_mem}
