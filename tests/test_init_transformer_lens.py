"""``model.init=transformer_lens`` gives, parameter for parameter, what TransformerLens'
``HookedTransformer(HookedTransformerConfig(..., init_weights=True, seed=s))`` holds, and the
default initialisation is what it always was (bit for bit).

Skipped where TransformerLens 3.x is not installed (CI installs it through the ``tl`` extra
and makes a missing one an error, as in tests/test_transformer_lens_compat.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
import torch

from groktransfer.config.schema import ConfigError
from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig, config_problems

#: the seed-001 notebook's model (integer addition, p = 10): one layer, 4 heads of 32, ReLU, no LayerNorm
NOTEBOOK = TransformerConfig(d_vocab=11, d_vocab_out=20, n_ctx=3, init="transformer_lens")
#: the seed-002 notebook's model (ARENA's 4-digit sums): attention only, 2 layers, 3 heads of 24, LayerNorm
ATTN_ONLY = TransformerConfig(n_layers=2, n_heads=3, d_model=48, d_head=24, d_mlp=1, attn_only=True,
                              normalization="LN", d_vocab=12, d_vocab_out=10, n_ctx=14, attn_bias=True,
                              unembed_bias=True, init="transformer_lens")  # fmt: skip
#: Power et al.'s decoder as the Grokfast code builds it: 2 layers, LayerNorm, GELU
TWO_LAYER = TransformerConfig(n_layers=2, normalization="LN", act="gelu", attn_bias=True, d_vocab=99,
                              d_vocab_out=97, n_ctx=4, init="transformer_lens")  # fmt: skip


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def test_default_initialisation_is_unchanged_bit_for_bit() -> None:
    """Digests recorded from the code before initialisations became a choice (e272c4b): the
    default must not move, or every recorded run identity would name other weights."""
    one = TransformerConfig(d_vocab=114, d_vocab_out=113, n_ctx=3)
    two = TransformerConfig(d_vocab=99, d_vocab_out=97, n_ctx=4, n_layers=2, normalization="LN", act="gelu", attn_bias=True)
    assert _digest(HookedGrokTransformer(one, seed=0)) == "ef4571c0cb6d9be2"
    assert _digest(HookedGrokTransformer(one, seed=7)) == "bf2b5611743add7b"
    assert _digest(HookedGrokTransformer(two, seed=3)) == "44eaa97d81327503"


def test_an_unknown_initialisation_is_refused_naming_the_registered_ones() -> None:
    problems = config_problems(replace(NOTEBOOK, init="xavier"))
    assert problems and "model.init='xavier'" in problems[0] and "transformer_lens" in problems[0]
    with pytest.raises((ValueError, ConfigError)):
        HookedGrokTransformer(replace(NOTEBOOK, init="xavier"), seed=0)


def test_reinit_of_one_component_gives_the_fresh_models_values_under_transformer_lens_init() -> None:
    fresh = HookedGrokTransformer(TWO_LAYER, seed=5)
    other = HookedGrokTransformer(TWO_LAYER, seed=6)
    other.reinit_component("mlp", 5)
    for name, value in other.component_parameters("mlp").items():
        assert torch.equal(value, dict(fresh.named_parameters())[name]), name
    assert not torch.equal(other.embed.W_E, fresh.embed.W_E)  # the other components kept seed 6's


tl = None
if os.environ.get("GROKTRANSFER_REQUIRE_TL") == "1":
    import transformer_lens as tl  # CI: must be importable
else:
    try:
        import transformer_lens as tl
    except ImportError:
        tl = None
needs_tl = pytest.mark.skipif(tl is None or not hasattr(tl, "HookedTransformer"),
                              reason="TransformerLens 3.x (HookedTransformer) is not installed")  # fmt: skip


@needs_tl
@pytest.mark.parametrize("cfg, seed", [(NOTEBOOK, 999), (NOTEBOOK, 0), (ATTN_ONLY, 0), (TWO_LAYER, 42)],
                         ids=["int_add_notebook_seed999", "int_add_seed0", "attn_only_2l_seed0", "two_layer_ln_gelu_seed42"])  # fmt: skip
def test_transformer_lens_init_equals_hooked_transformer_parameter_for_parameter(cfg: TransformerConfig, seed: int) -> None:
    ours = HookedGrokTransformer(cfg, seed=seed)
    tl_cfg = {k: v for k, v in ours.hooked_transformer_config_dict().items() if k not in ("model_name",)}
    theirs = tl.HookedTransformer(tl.HookedTransformerConfig(**{**tl_cfg, "seed": seed, "init_weights": True}))
    mine, reference = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert set(reference) == set(mine)
    for name, value in reference.items():
        assert torch.equal(mine[name].detach(), value.detach()), name  # every value equal, not close
