"""The EmergentBridge model on one screen: projection heads, the proxy synthesizer G, the losses.

- `Head`: frozen-encoder features of one modality -> unit vector in the shared d-dim space.
- `ProxyMLP` / `DiffusionPrior`: the noisy bridge anchor p = G(z_anchor, noise), mapping an
  anchor embedding (image) to a proxy embedding of an already-aligned modality (text).
- `info_nce`: symmetric InfoNCE (CLIP loss), optionally with several positives per row.
- `proxy_loss`: 1 - cos(P z_new, P p) with P = I - u u^T (u = paired anchor embedding), so its
  gradient has no component along u; `u=None` gives the naive variant without projection.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from bridge.config import VARIANTS
from core.deps import require

torch = require("torch", "the bridge model")
nn = torch.nn
F = torch.nn.functional


HEAD_KINDS = ("mlp", "residual", "identity", "labelspace", "labelspace-residual")
MIN_ITEMS_TO_CENTRE = 10  # fewer items: no centring on their own mean (one item would become zero)


class LabelMap(nn.Module):
    """A fixed map into a classifier's label space (see `bridge.labelspace`): features ->
    sqrt(softmax(scale * logits)), a unit vector. Logits are the classifier head's (pixels),
    cosines to the class prompts (text, mode 1) or the log of a tagger's class probabilities
    (audio, mode 2). With `classes` given (a concept space), a fixed 0/1 `spread` (classes, dim)
    sums each concept's mass over the classes under it (`bridge.concepts`) before the square root
    and a normalisation. Its tensors are buffers: saved with the bridge (but `spread`, rebuilt from
    the shipped table), never trained."""

    LINEAR, COSINE, LOG_PROBABILITIES = 0, 1, 2

    def __init__(self, in_dim: int, dim: int, classes: int | None = None):
        super().__init__()
        spreads, classes = classes is not None, classes or dim
        self.register_buffer("weight", torch.zeros(classes, in_dim))
        self.register_buffer("bias", torch.zeros(classes))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("cosine", torch.zeros(()))  # the input mode (kept under its first name)
        # Rebuilt from the shipped concept table (`bridge.concepts`), never saved: it is large and fixed.
        self.register_buffer("spread", torch.zeros(classes, dim) if spreads else None, persistent=False)

    def set(self, weight: Any, bias: Any, scale: float, cosine: bool | int, family: str | None = None) -> "LabelMap":
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(np.asarray(weight), dtype=torch.float32))
            self.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
            self.scale.fill_(float(scale))
            self.cosine.fill_(float(cosine))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mode = int(self.cosine)
        if mode == self.COSINE:
            x = F.normalize(features, dim=-1)
        elif mode == self.LOG_PROBABILITIES:
            x = torch.log(features.clamp_min(1e-6))
        else:
            x = features
        p = F.softmax(F.linear(x, self.weight, self.bias) * self.scale, dim=-1)
        if self.spread is None:
            return p.sqrt()
        return F.normalize((p @ self.spread).clamp_min(0).sqrt(), dim=-1)  # the mass under each concept


class Head(nn.Module):
    """Frozen-encoder features of one modality -> unit vector in the shared space.

    - `identity`: the encoder's own L2-normalised output (a frozen, already aligned encoder:
      CLIP image/text). No parameters.
    - `labelspace`: a fixed `LabelMap` into the image classifier's label space (the offline
      aligned base, see `bridge.labelspace`). No parameters.
    - `labelspace-residual`: `normalize(labelmap(x) + mlp(x))`, the MLP's last layer starting at
      zero: a head that starts exactly at the label-space vector (the zero-training baseline) and
      learns from pairs only what validation says it should.
    - `residual`: `normalize(skip(x) + mlp(x))` on standardised features; `skip` is a linear map
      set where the encoder's geometry is (a copy of the anchor's map, PCA, or a closed-form fit
      to the anchor) and the MLP's last layer starts at zero, so training starts from that map.
    - `mlp`: a 2-layer MLP from scratch (the ablation `--head-init random`).

    Standardisation statistics are buffers fitted on the training features, because frozen
    encoders emit very different scales.
    """

    def __init__(self, in_dim: int, dim: int, hidden: int = 512, dropout: float = 0.1, kind: str = "mlp",
                 classes: int | None = None):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {kind!r}; one of {HEAD_KINDS}")
        if kind == "identity" and in_dim != dim:
            raise ValueError(f"an identity head needs features of the space's size ({dim}), got {in_dim}")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.skip = nn.Linear(in_dim, dim) if kind == "residual" else None
        self.labels = LabelMap(in_dim, dim, classes) if kind.startswith("labelspace") else None
        self.net = None if kind in ("identity", "labelspace") else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        if kind in ("residual", "labelspace-residual"):
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def fit_scaler(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        std = features.std(0) if len(features) > 1 else torch.ones_like(self.std)
        # A floor relative to the typical spread: with few training items (a handful of class
        # prompts) some coordinates barely vary, and dividing by ~0 would blow up unseen inputs.
        self.std.copy_(std.clamp_min(max(1e-6, 0.1 * float(std.median()))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return F.normalize(features, dim=-1)
        if self.kind == "labelspace":
            return self.labels(features)
        x = (features - self.mean) / self.std
        out = self.net(x)
        if self.skip is not None:
            out = out + self.skip(x)
        if self.labels is not None:
            out = out + self.labels(features)
        return F.normalize(out, dim=-1)

    @property
    def fixed(self) -> bool:
        """True for a head with nothing to train: its vectors are the encoder's (or their label-space map)."""
        return self.kind in ("identity", "labelspace")

    def scale_learned(self, scale: float) -> None:
        """Keep `scale` of what a residual head learned on top of its start: its MLP's output scaled
        (the class guard's share; 0 would be the start itself)."""
        with torch.no_grad():
            self.net[-1].weight.mul_(scale)
            self.net[-1].bias.mul_(scale)


# ------------------------------------------------------------------------------ where heads start


def _standardised(head: Head, features: np.ndarray) -> torch.Tensor:
    return (torch.as_tensor(features, dtype=torch.float32) - head.mean) / head.std


def init_pca(head: Head, features: np.ndarray, seed: int) -> None:
    """skip = the top principal axes of the standardised features, completed with random
    orthonormal directions: the anchor's own geometry, kept as well as `dim` allows."""
    raw = torch.as_tensor(features, dtype=torch.float32)
    with torch.no_grad():  # centre, one global scale: per-coordinate scaling would bend the geometry
        # (Centring needs a few items: one item minus its own mean is the zero vector.)
        head.mean.copy_(raw.mean(0) if len(raw) >= MIN_ITEMS_TO_CENTRE else torch.zeros_like(head.mean))
        head.std.fill_(max(float(raw.std()), 1e-6) if raw.numel() > 1 else 1.0)
    x = _standardised(head, features)
    dim, in_dim = head.skip.weight.shape
    basis = torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh if len(x) > 1 else torch.zeros(0, in_dim)
    basis = basis[: min(dim, in_dim)]
    missing = min(dim, in_dim) - len(basis)
    if missing > 0:  # fewer items than dimensions: random directions keep unseen inputs apart
        g = torch.randn(missing, in_dim, generator=torch.Generator().manual_seed(seed), device="cpu").to(x.device)
        g = g - (g @ basis.T) @ basis
        basis = torch.cat([basis, torch.linalg.qr(g.T).Q.T[:missing]])
    weight = torch.zeros(dim, in_dim)
    weight[: len(basis)] = basis
    with torch.no_grad():
        head.skip.weight.copy_(weight)
        head.skip.bias.zero_()


def init_copy(head: Head, anchor_head: Head, features: np.ndarray) -> None:
    """Start a head that reads the anchor's backbone (depth, thermal through the image CNN)
    where the anchor is: the anchor's own map (centred on this modality's own mean, which
    removes the offset between, say, thermal and RGB activations), or the identity for a
    frozen anchor."""
    if anchor_head.kind == "identity":
        with torch.no_grad():  # skip(standardise(x)) = x: bridged = the raw encoder output
            head.skip.weight.copy_(torch.diag(head.std))
            head.skip.bias.copy_(head.mean)
        return
    head.load_state_dict(anchor_head.state_dict())
    if len(features) >= MIN_ITEMS_TO_CENTRE:
        with torch.no_grad():
            head.mean.copy_(torch.as_tensor(features, dtype=torch.float32).mean(0))


def init_ridge(head: Head, features: np.ndarray, rows: np.ndarray, targets: torch.Tensor,
               alpha: float = 0.1) -> None:
    """skip = the closed-form ridge map from standardised features to the paired anchor vectors."""
    x = _standardised(head, features[rows])
    x_mean, z_mean = x.mean(0), targets.mean(0)
    xc, zc = x - x_mean, targets - z_mean
    gram = xc.T @ xc
    ridge = alpha * float(gram.diagonal().mean().clamp_min(1e-6))
    w = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0]), xc.T @ zc)  # (in_dim, dim)
    with torch.no_grad():
        head.skip.weight.copy_(w.T)
        head.skip.bias.copy_(z_mean - x_mean @ w)


class InstanceMap(nn.Module):
    """Binds a modality in the anchor encoder's own geometry, where items are told apart (the label
    space keeps only their classes): `source` features -> `target`'s raw feature space, and back
    through the transpose, both as unit vectors compared with the other side's stored `raw_<m>`
    vectors. Starts at the identity (with no bias), i.e. exactly at the raw route of two modalities
    read by one encoder.

    - `to_target(x_s)  = normalize(W unit(x_s) + b)`, searched against unit target features;
    - `to_source(x_t) = normalize(W^T unit(x_t) + c)`, searched against unit source features.

    Example:
        >>> m = InstanceMap(4, 4)
        >>> x = torch.rand(2, 4)
        >>> bool(torch.allclose(m.to_target(x), F.normalize(x, dim=-1)))
        True
    """

    def __init__(self, source_dim: int, target_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(target_dim, source_dim))
        self.bias = nn.Parameter(torch.zeros(target_dim))
        self.back_bias = nn.Parameter(torch.zeros(source_dim))

    def to_target(self, source_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.linear(F.normalize(source_features, dim=-1), self.weight, self.bias), dim=-1)

    def to_source(self, target_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.linear(F.normalize(target_features, dim=-1), self.weight.T, self.back_bias), dim=-1)


def instance_key(source: str, target: str) -> str:
    """The module name of the instance map from `source` to `target` (one map serves both directions)."""
    return f"{source}_to_{target}"


class ProxyMLP(nn.Module):
    """The cheap G for ablations: p = normalize(MLP(z) + sigma * eps)."""

    def __init__(self, dim: int, hidden: int = 512, sigma: float = 0.1):
        super().__init__()
        self.sigma = sigma
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def loss(self, z_anchor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(self.net(z_anchor), target, dim=-1)).mean()

    def mean(self, z_anchor: torch.Tensor) -> torch.Tensor:
        """The direction the samples scatter around: normalize(MLP(z)), one pass, no noise."""
        return F.normalize(self.net(z_anchor), dim=-1)

    def sample(self, z_anchor: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        mu = self.mean(z_anchor)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device)
        return F.normalize(mu + self.sigma * noise, dim=-1)


class DiffusionPrior(nn.Module):
    """A small conditional diffusion prior in embedding space (DALL-E 2 style).

    The denoiser predicts the clean embedding x0 from (x_t, t, z_anchor), as the DALL-E 2
    prior does; sampling is deterministic DDIM over a few steps, so all randomness is the
    starting noise: that noise is what makes the bridge anchor "noisy". Embeddings are unit
    vectors, scaled by sqrt(dim) so each coordinate has roughly unit variance.
    """

    def __init__(self, dim: int, hidden: int = 512, timesteps: int = 1000, steps: int = 8, depth: int = 2):
        super().__init__()
        self.dim, self.timesteps, self.steps = dim, timesteps, steps
        self.scale = math.sqrt(dim)
        # Cosine noise schedule (Nichol & Dhariwal): alpha_bar(t) for t = 0..T.
        s = 0.008
        t = torch.linspace(0, 1, timesteps + 1)
        alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        self.register_buffer("alpha_bar", (alpha_bar / alpha_bar[0]).clamp(1e-5, 1.0))
        self.time_embed = nn.Sequential(nn.Linear(32, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(2 * dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden * 2), nn.GELU(), nn.Linear(hidden * 2, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def _timestep_features(self, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(1000.0) * torch.arange(16, device=t.device) / 16)
        angles = (t.float() / self.timesteps)[:, None] * 1000.0 * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, z_anchor: torch.Tensor) -> torch.Tensor:
        """Predict x0 (scaled) from the noisy x_t at integer timesteps t."""
        h = self.inp(torch.cat([x_t, z_anchor * self.scale], dim=-1)) + self.time_embed(self._timestep_features(t))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)

    def loss(self, z_anchor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x0 = target * self.scale
        t = torch.randint(1, self.timesteps + 1, (x0.shape[0],), device=x0.device)
        ab = self.alpha_bar[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)
        return F.mse_loss(self.denoise(x_t, t, z_anchor), x0)

    def mean(self, z_anchor: torch.Tensor) -> torch.Tensor:
        """G's posterior mean E[x0 | z], normalised, in one denoiser pass.

        At t = T the noisy input holds no trace of x0 (alpha_bar(T) ~ 1e-5), so the x0 the
        denoiser was trained (by MSE) to predict there is E[x0 | z]: what the average of many
        samples estimates, without their Monte Carlo noise, at 1/(samples x steps) of the cost.
        x_T = 0 is the noise's own mean.
        """
        n = z_anchor.shape[0]
        x_t = torch.zeros((n, self.dim), device=z_anchor.device, dtype=z_anchor.dtype)
        return F.normalize(self.denoise(x_t, torch.full((n,), self.timesteps, device=z_anchor.device), z_anchor), dim=-1)

    def sample(self, z_anchor: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None) -> torch.Tensor:
        steps = steps or self.steps
        x = noise if noise is not None else torch.randn(z_anchor.shape, generator=generator, device=z_anchor.device)
        ts = torch.linspace(self.timesteps, 0, steps + 1).round().long().tolist()
        for t_now, t_next in zip(ts[:-1], ts[1:]):
            ab_now, ab_next = self.alpha_bar[t_now], self.alpha_bar[t_next]
            x0 = self.denoise(x, torch.full((x.shape[0],), t_now, device=x.device), z_anchor)
            eps = (x - ab_now.sqrt() * x0) / (1 - ab_now).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps  # DDIM, eta = 0
        return F.normalize(x, dim=-1)


PROXY_MODELS = {"diffusion": DiffusionPrior, "mlp": ProxyMLP}
__all__ = ["VARIANTS", "PROXY_MODELS", "HEAD_KINDS", "LabelMap", "Head", "init_pca", "init_copy", "init_ridge", "ProxyMLP", "DiffusionPrior", "InstanceMap", "instance_key", "instance_loss", "info_nce", "neighbour_loss", "proxy_loss", "BridgeModules",
           "build_modules"]


# ------------------------------------------------------------------------------ losses


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
             positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between unit rows of `a` and `b` (the CLIP loss).

    `positives[i, j]` marks b_j as a positive for a_i (default: the diagonal). With several
    positives per row the target is spread evenly over them, which keeps items that share a
    label from being pushed apart as false negatives.

    Example:
        >>> a = F.normalize(torch.randn(4, 8), dim=-1)
        >>> float(info_nce(a, a, torch.tensor(10.0))) < math.log(4)
        True
    """
    logits = logit_scale * a @ b.T
    return (_row_cross_entropy(logits, positives) + _row_cross_entropy(logits.T, _t(positives))) / 2


def _t(positives: torch.Tensor | None) -> torch.Tensor | None:
    return None if positives is None else positives.T


def _row_cross_entropy(logits: torch.Tensor, positives: torch.Tensor | None) -> torch.Tensor:
    """Each row's cross-entropy against its positives (the diagonal by default), spread evenly."""
    if positives is None:
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
    pos = positives.float()
    return -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()


def instance_loss(imap: InstanceMap, x_source: torch.Tensor, x_target: torch.Tensor, logit_scale: torch.Tensor,
                  positives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of an `InstanceMap` both ways, each scored as search will score it: mapped source
    queries against unit target features, and target queries mapped back against unit source features.

    Example:
        >>> x = torch.randn(4, 8)
        >>> float(instance_loss(InstanceMap(8, 8), x, x, torch.tensor(20.0))) < math.log(4)
        True
    """
    forward = imap.to_target(x_source) @ F.normalize(x_target, dim=-1).T
    backward = imap.to_source(x_target) @ F.normalize(x_source, dim=-1).T
    return (_row_cross_entropy(logit_scale * forward, positives)
            + _row_cross_entropy(logit_scale * backward, _t(positives))) / 2


def neighbour_loss(z: torch.Tensor, features: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """KL(raw || head) between each row's softmax over the batch's other rows, by cosine through the
    frozen features and through the head: zero when the head keeps every item's neighbours as the
    encoder has them.

    Example:
        >>> x = torch.randn(6, 8)
        >>> float(neighbour_loss(F.normalize(x, dim=-1), x)) < 1e-6
        True
    """
    n = z.shape[0]
    if n < 3:
        return z.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    raw = F.normalize(features, dim=-1)
    s_raw = (raw @ raw.T)[off].view(n, n - 1) / temperature
    s_z = (z @ z.T)[off].view(n, n - 1) / temperature
    return F.kl_div(F.log_softmax(s_z, dim=1), F.log_softmax(s_raw, dim=1), log_target=True, reduction="batchmean")


def project_out(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Row-wise P x with P = I - u u^T (u unit rows): x without its component along u."""
    return x - (x * u).sum(-1, keepdim=True) * u


def proxy_loss(z_new: torch.Tensor, proxy: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine distance between the new modality and its proxy target.

    With `u` (the paired anchor embedding, unit rows) both sides are projected onto the
    plane orthogonal to u first: the loss then depends on z_new only through P z_new, so its
    gradient lies in that plane and cannot move z_new along (or off) its anchor direction.
    `u=None` is the naive variant, whose gradient does pull along u.
    """
    if u is not None:
        z_new, proxy = project_out(z_new, u), project_out(proxy, u)
    return (1 - F.cosine_similarity(z_new, proxy, dim=-1, eps=1e-8)).mean()


# ------------------------------------------------------------------------------ container


class BridgeModules(nn.Module):
    """All trainable parts: one head per modality, G, one temperature per trained pair."""

    def __init__(self, feature_dims: dict[str, int], config: dict[str, Any]):
        super().__init__()
        dim, hidden = config["dim"], config["hidden"]
        kinds = config.get("head_kinds", {})  # checkpoints from before head kinds hold MLP heads
        families = config.get("label_classes", {})  # concept spaces: which classes spread over the concepts
        table = None
        if families:
            from bridge.concepts import check_table, concept_table

            check_table(config)
            table = concept_table()
        self.heads = nn.ModuleDict({m: Head(d, dim, hidden, config["dropout"], kinds.get(m, "mlp"),
                                            table.classes(families[m]) if m in families else None)
                                    for m, d in feature_dims.items()})
        for m, family in families.items():
            self.heads[m].labels.spread.copy_(torch.from_numpy(np.array(table.spread(family))))
        if config.get("proxy_model") is None:  # a zero-training bridge: no G, direct routes only
            self.proxy: nn.Module | None = None
        elif config["proxy_model"] == "diffusion":
            self.proxy = DiffusionPrior(dim, hidden, config["diffusion_timesteps"], config["diffusion_steps"],
                                                   config.get("diffusion_depth", 2))
        else:
            self.proxy = ProxyMLP(dim, hidden, config["proxy_sigma"])
        # Instance maps (`InstanceMap`): {"thermal_to_image": {"source": ..., "target": ...}}; none in
        # checkpoints from before them, whose state then has no such weights.
        self.instance = nn.ModuleDict({key: InstanceMap(feature_dims[m["source"]], feature_dims[m["target"]])
                                       for key, m in (config.get("instance_maps") or {}).items()})
        init = math.log(1 / config["temperature"])
        self.logit_scales = nn.ParameterDict({m: nn.Parameter(torch.tensor(init)) for m in feature_dims})


def build_modules(config: dict[str, Any]) -> BridgeModules:
    return BridgeModules(config["feature_dims"], config)
