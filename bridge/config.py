"""The training settings (`TrainConfig`): every one is a typed CLI option and is saved in the checkpoint.

Kept free of torch so that building the command line (and `ebridge --help`) stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass

# The preset used wherever none is named (training, `ebridge index` with no --bridge, the pretrained
# space): the one definition; bridge.encoders.DEFAULT_PRESET is this name.
DEFAULT_PRESET = "offline"

# `oracle` is the benchmark's ceiling, not a method: each bound modality is also trained with its own
# pairs to every modality placed before it (the proxy and earlier bound ones), so the "never paired"
# pairs are paired there.
VARIANTS = ("anchor", "naive-proxy", "emergentbridge", "oracle")
PROXY_MODELS = ("diffusion", "mlp")
BASES = ("auto", "frozen", "finetune", "trained")
HEAD_INITS = ("encoder", "random")
PROXY_VIEWS = ("mean", "samples")


@dataclass
class TrainConfig:
    """Every setting of a training run; all of it is saved in the checkpoint."""

    preset: str = DEFAULT_PRESET
    # "frozen": modalities the preset declares aligned (CLIP image/text, or image/text through the
    # offline presets' label space) keep their pretrained vectors and no base is trained;
    # "finetune": a label-space base starts there and is trained on the pairs, kept only where
    # validation beats the start; "trained": a base space is learned from the anchor's PCA;
    # "auto": frozen for CLIP-style towers; on a label-space preset with image-text pairs, finetune
    # or trained, whichever the manifest validates best on (`train.choose_base`); trained otherwise.
    base: str = "auto"
    dim: int = 256  # the space's size when the base is trained (a frozen base has its encoders' size)
    anchor: str = "image"
    proxy: str = "text"
    variant: str = "emergentbridge"
    proxy_model: str = "diffusion"  # "diffusion" (the method) or "mlp" (ablation)
    lambda_proxy: float = 1.0
    temperature: float = 0.07  # initial; learnable, as in CLIP
    proxy_sigma: float = 0.1  # noise of the mlp proxy
    diffusion_steps: int = 8  # DDIM sampling steps
    diffusion_timesteps: int = 1000
    diffusion_depth: int = 2  # residual blocks of the denoiser
    # How an indexed item or a query gets its proxy view G(z) for the proxy and fused routes:
    # "mean": G's posterior mean in one pass (E[x0 | z] for the diffusion prior); "samples": the
    # mean of 8 fixed-noise samples (what checkpoints before this setting used; 20-35x the cost,
    # and no better on the digits bench's proxy and fused routes).
    proxy_view: str = "mean"
    hidden: int = 512
    dropout: float = 0.1
    batch_size: int = 256
    steps: int = 600  # per head-training stage
    proxy_steps: int = 2000
    proxy_bank: int = 8  # G samples drawn per anchor item before binding (fresh noise each)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # "encoder": heads start at the encoder's geometry (a copy of the anchor's map for a shared
    # backbone, PCA for a trained anchor, a closed-form ridge fit to the anchor otherwise) and are
    # pulled back towards that start by `start_decay`; "random": MLP heads from scratch (ablation).
    head_init: str = "encoder"
    start_decay: float = 0.01
    # Weight of a term that keeps each trained head's neighbourhoods: within a batch, who is near whom
    # through the head should stay as it is through the frozen features (KL of the two softmaxes over
    # the batch). Against heads that pull items onto their classes and lose what tells them apart.
    keep_neighbours: float = 0.0
    # A head that starts at its label-space vector (a modality the pretrained space places) is first
    # trained with a third of the manifest's classes held out; the bridge keeps only the largest share
    # of its learned part at which the held-out classes lose nothing against the start (none: the head
    # stays its label-space map): a space that knew those classes with no pairs must not forget them.
    class_guard: bool = True
    select: bool = True  # keep each head's best validation step (the start included)
    eval_every: int = 50  # steps between validation checks for selection
    patience: int = 6  # stop a stage after this many checks without a better validation R@1
    val_fraction: float = 0.2  # of the training pairs held out for selection when there is no val split
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.proxy_model not in PROXY_MODELS:
            raise ValueError(f"unknown proxy model {self.proxy_model!r}; choose one of {', '.join(PROXY_MODELS)}")
        if self.proxy_view not in PROXY_VIEWS:
            raise ValueError(f"unknown proxy view {self.proxy_view!r}; choose one of {', '.join(PROXY_VIEWS)}")
        if self.base not in BASES:
            raise ValueError(f"unknown base {self.base!r}; choose one of {', '.join(BASES)}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"unknown head init {self.head_init!r}; choose one of {', '.join(HEAD_INITS)}")
        if self.anchor == self.proxy:
            raise ValueError("anchor and proxy must be different modalities")
