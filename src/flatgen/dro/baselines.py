"""Baselines in the game's harness: minimum-Wasserstein training (no defenders) and WGAN-GP."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from flatgen.dro.game import DROGame
from flatgen.dro.transport import OTDistance


def min_wasserstein(
    generator: nn.Module,
    latent_dim: int,
    ot: OTDistance | None = None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    seed: int = 0,
) -> DROGame:
    """The same generator trained on minibatch OT to the real batch: the game without defenders."""
    return DROGame(generator, latent_dim, steps=0, ot=ot, lr=lr, betas=betas, seed=seed)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on random real/fake interpolates (Gulrajani 2017)."""
    return _critic_terms(critic, real, fake, rng)[2]


def _critic_terms(
    critic: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean critic(real), mean critic(fake), gradient penalty) from one critic forward."""
    eps = torch.rand(len(real), *([1] * (real.ndim - 1)), generator=rng).to(real)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    # one batched forward: small critics are dominated by per-call overhead
    scores = critic(torch.cat([real, fake, x_hat]))
    n = len(real)
    (grad,) = torch.autograd.grad(scores[2 * n :].sum(), x_hat, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    return scores[:n].mean(), scores[n : 2 * n].mean(), penalty


class WGANGP:
    """WGAN-GP: n_critic critic updates (each on a fresh real batch) per generator update."""

    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        latent_dim: int,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        seed: int = 0,
    ):
        self.generator, self.critic, self.latent_dim = generator, critic, latent_dim
        self.n_critic, self.gp_weight = n_critic, gp_weight
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_c = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
        self.rng = torch.Generator().manual_seed(seed)

    def _z(self, like: Tensor) -> Tensor:
        return torch.randn(len(like), self.latent_dim, generator=self.rng).to(like)

    def step(self, draw_real: Callable[[], Tensor]) -> dict[str, float]:
        """n_critic critic steps, then one generator step."""
        for _ in range(self.n_critic):
            real = draw_real()
            with torch.no_grad():
                fake = self.generator(self._z(real))
            on_real, on_fake, penalty = _critic_terms(self.critic, real, fake, self.rng)
            gap = on_real - on_fake
            loss_c = -gap + self.gp_weight * penalty
            self.opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            self.opt_c.step()
        self.critic.requires_grad_(False)
        loss_g = -self.critic(self.generator(self._z(real))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.critic.requires_grad_(True)
        return {"critic_gap": gap.item(), "generator_loss": loss_g.item()}
