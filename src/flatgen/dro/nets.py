"""Small networks for the DRO game: MLP generator, critic, and the autoencoder behind features."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# smooth activations only: the defenders' ascent runs through these networks in x
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "elu": nn.ELU, "softplus": nn.Softplus}


def mlp(
    in_dim: int, out_dim: int, *, hidden: int, depth: int, activation: str = "silu"
) -> nn.Sequential:
    """depth hidden layers of width hidden with a smooth activation (ascent in x is then well
    behaved: the loss has a finite smoothness constant in x)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """G(z): latent_dim -> out_dim, optionally squashed to [-1, 1] (images)."""

    def __init__(
        self,
        latent_dim: int,
        out_dim: int,
        *,
        hidden: int = 128,
        depth: int = 3,
        tanh: bool = False,
        activation: str = "silu",
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(latent_dim, out_dim, hidden=hidden, depth=depth, activation=activation)
        self.tanh = tanh

    def forward(self, z: Tensor) -> Tensor:
        out = self.net(z)
        return torch.tanh(out) if self.tanh else out


class MLPCritic(nn.Module):
    """WGAN critic or GAN discriminator f(x) -> one score (logit) per sample."""

    def __init__(self, in_dim: int, *, hidden: int = 128, depth: int = 3, activation: str = "silu"):
        super().__init__()
        self.net = mlp(in_dim, 1, hidden=hidden, depth=depth, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class AutoEncoder(nn.Module):
    """MLP autoencoder; `encode` is the game's feature map."""

    def __init__(
        self,
        in_dim: int,
        *,
        latent_dim: int = 16,
        hidden: int = 128,
        depth: int = 2,
        activation: str = "silu",
    ):
        super().__init__()
        kw = dict(hidden=hidden, depth=depth, activation=activation)
        self.encoder = mlp(in_dim, latent_dim, **kw)
        self.decoder = mlp(latent_dim, in_dim, **kw)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encode(x)).view_as(x)


def train_autoencoder(
    ae: AutoEncoder,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> float:
    """Fit ae to reconstruct data (MSE), then freeze it; returns the final full-data MSE."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen)
        batch = data[idx]
        loss = (ae(batch) - batch).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ae.requires_grad_(False).eval()
    with torch.no_grad():
        return (ae(data) - data).pow(2).mean().item()


def calibrated_features(ae: AutoEncoder, data: Tensor) -> Callable[[Tensor], Tensor]:
    """ae.encode rescaled so the mean squared pairwise distance on data matches data space.

    The defenders' penalty gamma * ||x - x0||^2 is in data units; matching the scales keeps
    gamma's meaning when distances are measured in feature space.
    """
    with torch.no_grad():
        sample = data[: min(len(data), 1000)].flatten(1)
        feats = ae.encode(sample)
        ratio = torch.cdist(sample, sample).pow(2).mean() / torch.cdist(feats, feats).pow(2).mean()
    scale = ratio.sqrt().item()
    return lambda x: ae.encode(x) * scale
