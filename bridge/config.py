"""The training settings (`TrainConfig`): every one is a typed CLI option and is saved in the checkpoint.

Kept free of torch so that building the command line (and `ebridge --help`) stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("anchor", "naive-proxy", "emergentbridge")
PROXY_MODELS = ("diffusion", "mlp")


@dataclass
class TrainConfig:
    """Every setting of a training run; all of it is saved in the checkpoint."""

    preset: str = "offline"
    dim: int = 256
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
    hidden: int = 512
    dropout: float = 0.1
    batch_size: int = 256
    steps: int = 600  # per head-training stage
    proxy_steps: int = 2000
    proxy_bank: int = 8  # G samples drawn per anchor item before binding (fresh noise each)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.proxy_model not in PROXY_MODELS:
            raise ValueError(f"unknown proxy model {self.proxy_model!r}; choose one of {', '.join(PROXY_MODELS)}")
        if self.anchor == self.proxy:
            raise ValueError("anchor and proxy must be different modalities")
