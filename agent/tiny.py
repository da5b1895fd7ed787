"""Randomly initialised Shap-E pipelines built offline from configs.

``tiny`` runs the real diffusers code path in seconds on a CPU (tests, demo);
``random-full`` has the exact shapes of ``openai/shap-e`` for benchmarking
without the weights. ``tiny-img2img`` and ``random-full-img2img`` are the same
for the image-to-3D pipeline (``ShapEImg2ImgPipeline``, ``openai/shap-e-img2img``):
a CLIP vision encoder and image processor built from configs instead of the
text encoder and tokenizer. Neither produces meaningful shapes: the weights are random,
seeded so that a given seed always builds the same pipeline. ``random-full``
decodes to noise; ``tiny``'s renderer is shaped (``shape_tiny_renderer``) so
that it decodes to a few small, smooth, coloured blobs that browsers render fast.
"""

from __future__ import annotations

from typing import Any

import torch

# The defining modules (see agent.pipeline): diffusers' top level types as placeholders.
from diffusers.models.transformers.prior_transformer import PriorTransformer
from diffusers.pipelines.shap_e.pipeline_shap_e import ShapEPipeline
from diffusers.pipelines.shap_e.pipeline_shap_e_img2img import ShapEImg2ImgPipeline
from diffusers.pipelines.shap_e.renderer import ShapERenderer
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

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


# The image-to-3D prior of openai/shap-e-img2img: the same transformer, conditioned on
# the 256 patch embeddings of the image encoder (layer-normed) instead of one text vector.
FULL_IMAGE_PRIOR: dict[str, Any] = {
    **FULL_PRIOR,
    "embedding_proj_dim": 1024,
    "embedding_proj_norm_type": "layer",
}

TINY_IMAGE_PRIOR: dict[str, Any] = {
    **TINY_PRIOR,
    "embedding_proj_dim": 16,  # = the tiny vision encoder's hidden size
    "embedding_proj_norm_type": "layer",
}

# clip-vit-large-patch14's vision tower, as used by openai/shap-e-img2img.
FULL_VISION: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
}

TINY_VISION: dict[str, Any] = {
    **FULL_VISION,
    "hidden_size": 16,
    "intermediate_size": 32,
    "projection_dim": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,  # 16 patch tokens
}

# CLIP's pixel normalisation (openai/shap-e-img2img image_processor/preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_image_processor(side: int) -> CLIPImageProcessor:
    """CLIP's preprocessing (resize the short side, centre crop, normalise), from values."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": side},
        resample=3,  # bicubic
        do_center_crop=True,
        crop_size={"height": side, "width": side},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


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
    decoder.get_buffer("cases").copy_(torch.from_numpy(cases))
    decoder.get_buffer("masks").copy_(torch.from_numpy(masks))


# How the tiny renderer's weights are shaped (see shape_tiny_renderer).
CARRIER_GAIN = 3.0  # carrier = gain * (radius^2 - |x|^2) + offset
RADIUS = 0.55  # of the bare sphere (the volume is [-1, 1]^3)
CARRIER_OFFSET = 10.0  # keeps the carrier where SiLU is close to the identity
NOISE_WEIGHT = 3.5  # scale of the latent-driven units' weights in the SDF output
POSENC_GAIN = 1.5  # LayerNorm gain of the first layer
POSENC_DECAY = 0.7  # gain per positional-encoding octave in the first layer
POSENC_MAX_DEG = 3  # octaves above this get zero gain
HIDDEN_GAIN = 0.7  # LayerNorm gain of the latent-projected hidden layers
COLOR_WEIGHT = 3.0  # std of the colour outputs' weights (before sigmoid)
COLOR_BIAS = 0.3  # std of the colour outputs' biases


def _posenc_degrees(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Octave of each column of diffusers' position encoding (-1: raw xyz), and which are odd.

    The columns are x, y, z, then sin(2^d * axis) for every octave d, then the cosines.
    """
    octaves = (width - 3) // 6
    per_block = torch.arange(octaves).repeat_interleave(3)
    degrees = torch.cat([torch.full((3,), -1), per_block, per_block])
    odd = torch.arange(width) < 3 + 3 * octaves
    return degrees, odd


@torch.no_grad()
def shape_tiny_renderer(renderer: ShapERenderer) -> None:
    """Re-initialise the tiny renderer so that latents decode to a few smooth blobs.

    With plain random init every octave of the NeRF position encoding (up to
    2^14) gets unit weight, so the SDF is white noise: ~500k faces at grid 64.
    Here hidden unit 0 is a fixed "carrier": a sphere built from the cos x and
    cos 2x features and passed unchanged through every layer (SiLU is close to
    the identity at +CARRIER_OFFSET). Units 1..7 stay latent-driven, so each
    prompt and seed still gets its own shape and colours, but they read only
    the low octaves of the odd features (xyz, sin) and have zero biases, which
    makes them exactly 0 at the centre: whatever the latent, the centre is
    inside and the mesh is never empty. Only parameter values change, never
    shapes or code, so diffusers runs this model as it runs real weights.
    """
    mlp = renderer.mlp.mlp
    degrees, odd = _posenc_degrees(mlp[0].in_features)
    cos1 = ((degrees == 0) & ~odd).nonzero().flatten()  # the cos(axis) columns
    cos2 = ((degrees == 1) & ~odd).nonzero().flatten()  # the cos(2 * axis) columns
    for i, proj in enumerate(renderer.params_proj.projections.values()):
        weight = proj.proj.weight.view(proj.vectors, proj.channels, proj.d_latent)
        bias = proj.proj.bias.view(proj.vectors, proj.channels)
        # Row 0 (the carrier) ignores the latent: LayerNorm of zeros is zero, so
        # the row is just its projection bias.
        weight[0] = 0.0
        bias[0] = 0.0
        proj.norm.bias.zero_()
        mlp[i].bias[1:] = 0.0
        if i == 0:
            gain = POSENC_GAIN * POSENC_DECAY ** degrees.clamp(min=0).float()
            gain[(degrees > POSENC_MAX_DEG) | ~odd] = 0.0
            proj.norm.weight.copy_(gain)
            bias[1:] *= gain
            # On [-1, 1], (15 + cos 2x - 16 cos x) / 6 = x^2 to within 0.011
            # (the x^4 terms cancel), so the carrier is a true sphere.
            bias[0, cos1] = CARRIER_GAIN * 16 / 6
            bias[0, cos2] = -CARRIER_GAIN / 6
            mlp[0].bias[0] = CARRIER_OFFSET + CARRIER_GAIN * (RADIUS**2 - 7.5)
        else:
            proj.norm.weight.fill_(HIDDEN_GAIN)
            proj.norm.weight[0] = 0.0  # latent-driven units do not read the carrier
            bias[1:, 0] = 0.0
            bias[0, 0] = 1.0  # carrier -> carrier
            mlp[i].bias[0] = 0.0
    for layer in (mlp[4], mlp[5]):
        torch.nn.init.normal_(layer.weight, std=HIDDEN_GAIN / 7**0.5)
        layer.weight[:, 0] = 0.0
        layer.weight[0] = 0.0
        layer.weight[0, 0] = 1.0
        layer.bias.zero_()
    out = mlp[6]
    torch.nn.init.normal_(out.weight, std=1.0 / 7**0.5)
    out.weight[:, 0] = 0.0
    out.weight[0, 0] = 1.0
    out.weight[0, 1:] *= NOISE_WEIGHT
    out.bias[0] = -CARRIER_OFFSET
    out.weight[3:6] *= COLOR_WEIGHT * 7**0.5
    torch.nn.init.normal_(out.bias[3:6], std=COLOR_BIAS)


def _renderer(tiny: bool) -> Any:
    renderer = ShapERenderer(**TINY_RENDERER) if tiny else ShapERenderer()
    if tiny:
        shape_tiny_renderer(renderer)
    return renderer


def _scheduler() -> Any:
    with quiet_scheduler_warnings():
        return HeunDiscreteScheduler(**SHAP_E_SCHEDULER)


def _check_size(size: str) -> bool:
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    return size == "tiny"


def build_random_pipeline(size: str = "tiny", seed: int = 0) -> ShapEPipeline:
    """Build a random ``tiny`` or ``full`` ShapEPipeline; same seed, same weights."""
    tiny = _check_size(size)
    # Module constructors draw from the global RNG; fork it so that building a
    # pipeline does not disturb (or depend on) anyone else's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        text_encoder = _text_encoder(TINY_TEXT if tiny else FULL_TEXT, tokenizer)
        prior = PriorTransformer(**(TINY_PRIOR if tiny else FULL_PRIOR))
        renderer = _renderer(tiny)
    fill_mc_tables(renderer)
    pipe = ShapEPipeline(
        prior=prior,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=_scheduler(),
        shap_e_renderer=renderer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_random_image_pipeline(size: str = "tiny", seed: int = 0) -> ShapEImg2ImgPipeline:
    """Build a random ``tiny`` or ``full`` ShapEImg2ImgPipeline; same seed, same weights."""
    tiny = _check_size(size)
    vision = TINY_VISION if tiny else FULL_VISION
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**vision))
        prior = PriorTransformer(**(TINY_IMAGE_PRIOR if tiny else FULL_IMAGE_PRIOR))
        renderer = _renderer(tiny)
    fill_mc_tables(renderer)
    pipe = ShapEImg2ImgPipeline(
        prior=prior,
        image_encoder=image_encoder,
        image_processor=build_image_processor(vision["image_size"]),
        scheduler=_scheduler(),
        shap_e_renderer=renderer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
