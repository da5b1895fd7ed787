"""Randomly initialised Shap-E pipelines built offline from configs.

``tiny`` runs the real diffusers code path in seconds on a CPU (tests, demo);
``random-full`` has the exact shapes of ``openai/shap-e`` for benchmarking
without the weights. Neither produces meaningful shapes: the weights are noise,
seeded so that a given seed always builds the same pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
from diffusers.pipelines.shap_e.renderer import ShapERenderer
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from agent.mctables import build_tables
from agent.pipeline import quiet_scheduler_warnings

# The scheduler config shipped in openai/shap-e (scheduler/scheduler_config.json).
SHAP_E_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "exp",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1024,
    "prediction_type": "sample",
    "use_karras_sigmas": True,
}

# The text-to-3D prior of openai/shap-e (diffusers' conversion script).
FULL_PRIOR: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 64,
    "num_layers": 24,
    "embedding_dim": 1024,
    "num_embeddings": 1024,
    "additional_embeddings": 0,
    "time_embed_act_fn": "gelu",
    "norm_in_type": "layer",
    "encoder_hid_proj_type": None,
    "added_emb_type": None,
    "time_embed_dim": 4096,
    "embedding_proj_dim": 768,
    "clip_embed_dim": 2048,
}

TINY_PRIOR: dict[str, Any] = {
    **FULL_PRIOR,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_layers": 1,
    "embedding_dim": 16,
    "num_embeddings": 32,  # = 4 renderer layers x 8 rows each
    "time_embed_dim": 64,
    "embedding_proj_dim": 16,
    "clip_embed_dim": 32,  # prior predicts mean and variance: 2 x embedding_dim
}

TINY_RENDERER: dict[str, Any] = {
    "param_shapes": ((8, 93), (8, 8), (8, 8), (8, 8)),
    "d_latent": 16,
    "d_hidden": 8,
    "n_output": 12,
    "background": (255.0, 255.0, 255.0),
}

# clip-vit-large-patch14's text tower, as used by openai/shap-e.
FULL_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}

TINY_TEXT: dict[str, Any] = {
    **FULL_TEXT,
    "hidden_size": 16,
    "intermediate_size": 32,
    "projection_dim": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def _byte_symbols() -> list[str]:
    """Byte-level BPE's printable stand-ins for the 256 byte values (GPT-2 scheme)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def build_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP tokenizer: every byte is a token, no merges.

    Real CLIP has 49k merged tokens; for random weights only the id range and
    the special tokens matter, and this needs no files.
    """
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_encoder(config: dict[str, Any], tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    text_config = CLIPTextConfig(
        **config,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=0,
    )
    return CLIPTextModelWithProjection(text_config)


def fill_mc_tables(renderer: ShapERenderer) -> None:
    """Give a randomly initialised renderer the marching-cubes tables it lacks."""
    cases, masks = build_tables()
    decoder = renderer.mesh_decoder
    decoder.cases.copy_(torch.from_numpy(cases))
    decoder.masks.copy_(torch.from_numpy(masks))


def build_random_pipeline(size: str = "tiny", seed: int = 0) -> ShapEPipeline:
    """Build a random ``tiny`` or ``full`` ShapEPipeline; same seed, same weights."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    tiny = size == "tiny"
    # Module constructors draw from the global RNG; fork it so that building a
    # pipeline does not disturb (or depend on) anyone else's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        text_encoder = _text_encoder(TINY_TEXT if tiny else FULL_TEXT, tokenizer)
        prior = PriorTransformer(**(TINY_PRIOR if tiny else FULL_PRIOR))
        renderer = ShapERenderer(**TINY_RENDERER) if tiny else ShapERenderer()
    fill_mc_tables(renderer)
    with quiet_scheduler_warnings():
        scheduler = HeunDiscreteScheduler(**SHAP_E_SCHEDULER)
    pipe = ShapEPipeline(
        prior=prior,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        shap_e_renderer=renderer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
