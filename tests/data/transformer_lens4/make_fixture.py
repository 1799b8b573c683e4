"""Write the TransformerLens 4 files tests/test_transformer_lens_import.py reads without TransformerLens.

Run with TransformerLens 4 installed (the ``tl4`` extra), from the repository root:
``python tests/data/transformer_lens4/make_fixture.py``. Written with 4.3.0.

A two-layer LayerNorm GELU model built by ``TransformerBridge.boot_native`` with every
parameter perturbed (TransformerLens initialises biases and LayerNorm to constants), saved
the two ways a 4.x model reaches us: ``bridge.state_dict()`` alone (what 4.x's own training
code writes) and ``bridge_checkpoint(bridge)`` (with its config); plus its logits on fixed
inputs, the answer the import must reproduce.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch
from transformer_lens import TransformerBridge
from transformer_lens.config import TransformerBridgeConfig

from groktransfer.model.transformer_lens import bridge_checkpoint

HERE = Path(__file__).resolve().parent

cfg = TransformerBridgeConfig(n_layers=2, n_heads=2, d_head=8, d_model=16, d_mlp=32, n_ctx=5, d_vocab=10,
                              d_vocab_out=9, act_fn="gelu", normalization_type="LN", seed=0, device="cpu")  # fmt: skip
bridge = TransformerBridge.boot_native(cfg).eval()
with torch.no_grad():
    gen = torch.Generator().manual_seed(0)
    for param in bridge.parameters():
        param.add_(0.1 * torch.randn(param.shape, generator=gen))
tokens = torch.randint(0, 10, (32, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    logits = bridge(tokens)
torch.save({k: v.detach().clone() for k, v in bridge.state_dict().items()}, HERE / "bridge_state_dict.pt")
torch.save(bridge_checkpoint(bridge), HERE / "bridge_checkpoint.pt")
torch.save({"tokens": tokens, "logits": logits, "transformer_lens": metadata.version("transformer-lens")}, HERE / "expected.pt")
