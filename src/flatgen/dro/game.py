"""The distributionally robust game for generators (Gao & Tembine 2018).

Defenders move each real sample x0 by WRM ascent on
    [its transport cost to the model's samples, under the minibatch OT plan] - gamma ||x - x0||^2,
measured in an encoder's feature space or in data space; the moved batch is the hard set.
The attacker updates G to minimize the OT cost (squared W2) between G(z) and the hard set,
differentiating <P, C(G(z), hard)> with the plan P fixed (envelope theorem).

Choices (documented here because they shape the results):
- The encoder is an autoencoder pretrained on the real training data and then frozen. A fixed
  feature metric keeps the defenders' objective stationary; training it jointly lets the
  encoder shrink distances (collapse features) instead of the generator closing them.
- The attacker's OT is in data space, so with no defenders (steps = 0) the game is exactly the
  minimum-Wasserstein baseline: the comparison isolates what the defenders add. A frozen encoder
  is not injective, so fitting features alone would let G drift off the data manifold.
- With data-space features and a fixed plan, a defender's problem is strongly concave only for
  gamma > 1 (its optimum is x0 + (x0 - m) / (gamma - 1), m the matched model mass); below that
  the few ascent steps, not the penalty, bound how far samples move.
- With a radius, the defenders are held to a Wasserstein ball E||x - x0||^2 <= radius (data
  space): gamma becomes the Lagrange multiplier of that constraint, updated after every round
  by dual ascent on (cost - radius). The step is exponentiated (multiplicative), so gamma stays
  positive and the step is scale-free: gamma <- gamma * exp(dual_lr * clip(cost / radius - 1)).
  Without a radius, gamma is a fixed per-sample penalty (the defenders are not in a ball).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flatgen.dro.transport import OTDistance
from flatgen.optim.wrm import wrm_perturb

FeatureMap = Callable[[Tensor], Tensor]
GAMMA_RANGE = (1e-4, 1e6)  # the dual variable is kept in here (a floor keeps steps finite)


def dual_update(gamma: float, *, cost: float, radius: float, lr: float) -> float:
    """One exponentiated dual-ascent step on the multiplier of E||x - x0||^2 <= radius.

    The normalized excess cost / radius - 1 is clipped to [-1, 1], so one round changes gamma
    by at most a factor exp(lr) (a far-off first round must not blow gamma up or down).
    """
    excess = min(max(cost / radius - 1.0, -1.0), 1.0)
    new = gamma * math.exp(lr * excess)
    return min(max(new, GAMMA_RANGE[0]), GAMMA_RANGE[1])


def defend(
    real: Tensor,
    fake: Tensor,
    gamma: float,
    *,
    steps: int = 3,
    step_size: float | None = None,
    ot: OTDistance | None = None,
    encoder: FeatureMap | None = None,
) -> Tensor:
    """The hard set: real samples moved away from the model's samples `fake` (detached)."""
    ot = ot if ot is not None else OTDistance()
    feat = encoder if encoder is not None else (lambda v: v.flatten(1))
    with torch.no_grad():
        target = feat(fake.detach())
    return wrm_perturb(
        lambda x: ot.per_sample(feat(x), target), real, gamma, steps=steps, step_size=step_size
    )


class DROGame:
    """Alternating defenders (hard set) and attacker (one Adam step of G toward it).

    `step(draw_real)` draws one real batch and returns logged floats. With steps = 0 this is
    plain minimum-Wasserstein generator training. With a radius, gamma is the dual variable of
    the defenders' Wasserstein budget (its start value given here), see the module docstring.
    """

    def __init__(
        self,
        generator: nn.Module,
        latent_dim: int,
        *,
        gamma: float = 2.0,
        steps: int = 3,
        step_size: float | None = None,
        ot: OTDistance | None = None,
        encoder: FeatureMap | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.999),
        seed: int = 0,
        radius: float | None = None,
        dual_lr: float = 0.5,
    ):
        if radius is not None and radius <= 0:
            raise ValueError(f"the defenders' radius must be > 0, got {radius}")
        self.generator = generator
        self.latent_dim = latent_dim
        self.gamma, self.steps, self.step_size = gamma, steps, step_size
        self.radius, self.dual_lr = radius, dual_lr
        self.ot = ot if ot is not None else OTDistance(seed=seed)
        self.encoder = encoder
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.rng = torch.Generator().manual_seed(seed)

    def hard_set(self, real: Tensor, fake: Tensor) -> Tensor:
        """The defenders' move (the real batch itself when steps = 0)."""
        if self.steps == 0:
            return real
        return defend(
            real,
            fake,
            self.gamma,
            steps=self.steps,
            step_size=self.step_size,
            ot=self.ot,
            encoder=self.encoder,
        )

    def step(self, draw_real: Callable[[], Tensor]) -> dict[str, float]:
        """One game round: defenders, then one attacker (generator) update."""
        real = draw_real()
        z = torch.randn(len(real), self.latent_dim, generator=self.rng).to(real)
        fake = self.generator(z)
        hard = self.hard_set(real, fake.detach())
        loss = self.ot.cost(fake, hard)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        moved = (hard - real).flatten(1).pow(2).sum(1).mean().item()
        stats = {"ot_to_hard": loss.item(), "defender_cost": moved, "gamma": self.gamma}
        if self.radius is not None and self.steps > 0:
            self.gamma = dual_update(self.gamma, cost=moved, radius=self.radius, lr=self.dual_lr)
        return stats
