"""Baselines in the game's harness: minimum-Wasserstein training (no defenders), WGAN-GP, and
the non-saturating GAN (Goodfellow et al. 2014), the JS-divergence baseline that Gao & Tembine's
claim (more stable and faster than KL/JS-based training) is about."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flatgen.dro.game import DROGame
from flatgen.dro.transport import OTDistance


def min_wasserstein(
    generator: nn.Module,
    latent_dim: int,
    *,
    ot: OTDistance | None = None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    seed: int = 0,
) -> DROGame:
    """The same generator trained on minibatch OT to the real batch: the game without defenders."""
    return DROGame(generator, latent_dim, gamma=1.0, steps=0, ot=ot, lr=lr, betas=betas, seed=seed)


def gradient_penalty(
    critic: nn.Module, real: Tensor, fake: Tensor, *, rng: torch.Generator
) -> Tensor:
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
        *,
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


def ns_gan_d_loss(on_real: Tensor, on_fake: Tensor) -> Tensor:
    """-log D(x) - log(1 - D(G(z))) from logits: softplus(-d_real) + softplus(d_fake).

    At the optimal discriminator the generator then faces 2 JS(P, Q) - log 4.
    """
    return F.softplus(-on_real).mean() + F.softplus(on_fake).mean()


def ns_gan_g_loss(on_fake: Tensor) -> Tensor:
    """-log D(G(z)) = softplus(-d_fake): the non-saturating generator loss."""
    return F.softplus(-on_fake).mean()


class NSGAN:
    """Non-saturating GAN: n_disc discriminator updates (fresh real batch each) per G update."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int,
        *,
        n_disc: int = 1,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        seed: int = 0,
    ):
        self.generator, self.disc, self.latent_dim = generator, discriminator, latent_dim
        self.n_disc = n_disc
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
        self.rng = torch.Generator().manual_seed(seed)

    def _z(self, like: Tensor) -> Tensor:
        return torch.randn(len(like), self.latent_dim, generator=self.rng).to(like)

    def step(self, draw_real: Callable[[], Tensor]) -> dict[str, float]:
        """n_disc discriminator steps, then one generator step."""
        for _ in range(self.n_disc):
            real = draw_real()
            with torch.no_grad():
                fake = self.generator(self._z(real))
            scores = self.disc(torch.cat([real, fake]))  # one batched forward
            d_loss = ns_gan_d_loss(scores[: len(real)], scores[len(real) :])
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        self.disc.requires_grad_(False)
        g_loss = ns_gan_g_loss(self.disc(self.generator(self._z(real))))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        return {"discriminator_loss": d_loss.item(), "generator_loss": g_loss.item()}
