"""Pydantic models of the DRO-game experiment (`flatgen dro`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

OTSolverName = Literal["exact", "sinkhorn", "sliced"]
MethodName = Literal["game", "minw", "wgan_gp", "ns_gan"]
METHODS: tuple[str, ...] = ("game", "minw", "wgan_gp", "ns_gan")
# smooth activations (see dro.nets.ACTIVATIONS): WRM ascent in x needs a finite smoothness
Activation = Literal["softplus", "elu", "silu"]


class _Strict(BaseModel):
    # strict: a boolean is not a number, a number not a name; inf / nan are refused
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# Adam's (beta1, beta2): a YAML list of two numbers, each in [0, 1)
_Beta = Annotated[float, Strict(), Field(ge=0, lt=1)]
Betas = Annotated[tuple[_Beta, _Beta], Field(strict=False)]


class OTConfig(_Strict):
    """How minibatch optimal transport (squared Euclidean cost) is solved."""

    solver: OTSolverName = "exact"
    sinkhorn_reg: float = Field(0.05, gt=0, description="entropic reg, relative to the mean cost")
    sinkhorn_iters: int = Field(200, ge=1)
    n_projections: int = Field(64, ge=1, description="random directions for sliced W2")


class GameConfig(_Strict):
    """Defenders of the DRO game: WRM ascent on the real batch against the model's samples."""

    gamma: float = Field(
        2.0, gt=0, description="penalty on the defenders' transport cost (with radius: its start)"
    )
    radius: float | None = Field(
        None,
        gt=0,
        description="Wasserstein budget E||x - x0||^2 of the defenders (squared data units); "
        "gamma is then its Lagrange multiplier, tuned by dual ascent. None: fixed penalty",
    )
    dual_lr: float = Field(0.5, gt=0, description="step of the exponentiated dual ascent")
    steps: int = Field(3, ge=0, description="defender ascent steps (0: no defenders)")
    step_size: float | None = Field(None, gt=0, description="None: 1 / (2 gamma)")
    feature_space: bool = Field(
        False, description="defenders measure the distance in the encoder's feature space"
    )


class EncoderConfig(_Strict):
    """The autoencoder whose encoder gives the game's feature space (pretrained, then frozen)."""

    latent_dim: int = Field(16, ge=1)
    hidden: int = Field(128, ge=1)
    depth: int = Field(2, ge=1)
    activation: Activation = "softplus"  # the defenders' ascent runs through the encoder
    pretrain_steps: int = Field(500, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)


class GeneratorConfig(_Strict):
    """MLP generator G(z), z ~ N(0, I)."""

    latent_dim: int = Field(8, ge=1)
    hidden: int = Field(128, ge=1)
    depth: int = Field(3, ge=1, description="hidden layers")
    activation: Activation = "silu"


class WGANGPConfig(_Strict):
    """WGAN-GP baseline: MLP critic, n_critic critic steps per generator step."""

    n_critic: int = Field(5, ge=1)
    gp_weight: float = Field(10.0, ge=0)
    lr: float | None = Field(None, gt=0, description="None: train.lr")
    betas: Betas = (0.5, 0.9)
    hidden: int = Field(128, ge=1)
    depth: int = Field(3, ge=1)


class GANConfig(_Strict):
    """Non-saturating GAN baseline (JS): MLP discriminator, n_disc steps per generator step."""

    n_disc: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0, description="None: train.lr")
    betas: Betas = (0.5, 0.999)
    hidden: int = Field(128, ge=1)
    depth: int = Field(3, ge=1)


class TrainConfig(_Strict):
    """Generator iterations, shared by every method."""

    iters: int = Field(1000, ge=1, le=10**9)
    batch_size: int = Field(256, ge=2, le=65536)
    lr: float = Field(1e-3, gt=0)
    betas: Betas = (0.5, 0.999)
    eval_every: int = Field(100, ge=1)
    n_eval: int = Field(1000, ge=2, le=10**6, description="generated samples per W2 evaluation")


class ShiftConfig(_Strict):
    """The shifted test distribution: test + N(0, noise_std^2) + a translation."""

    noise_std: float = Field(0.1, ge=0)
    translate: float = Field(
        0.25, ge=0, description="length of a constant offset along (1, ..., 1) (data units)"
    )
    translate_pixels: int = Field(0, ge=0, description="images only: shift right and down")


class DatasetConfig(_Strict):
    """toy2d (name = 8gaussians, swissroll, moons, checkerboard) or digits (fixed split)."""

    kind: Literal["toy2d", "digits"]
    name: str | None = None
    n_train: int | None = Field(None, ge=2, le=10**7, description="toy2d only (default 5000)")
    n_test: int | None = Field(None, ge=2, le=10**7, description="toy2d only (default 1000)")

    @model_validator(mode="after")
    def _check_name(self) -> DatasetConfig:
        from flatgen.data import TOY2D_NAMES

        if self.kind == "toy2d":
            if self.name not in TOY2D_NAMES:
                raise ValueError(f"toy2d needs name in {', '.join(TOY2D_NAMES)}, got {self.name!r}")
            self.n_train = self.n_train or 5000
            self.n_test = self.n_test or 1000
        else:
            if self.name not in (None, "digits"):
                raise ValueError(f"digits takes no name (got {self.name!r})")
            if self.n_train is not None or self.n_test is not None:
                raise ValueError("digits has a fixed split: n_train / n_test apply to toy2d only")
        return self

    @property
    def label(self) -> str:
        return self.name if self.kind == "toy2d" else "digits"


class DROExperimentConfig(_Strict):
    """The DRO-game comparison: every method x dataset x seed, the same generator and budget."""

    name: str = "dro"
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1)
    datasets: list[DatasetConfig] = Field(min_length=1)
    methods: list[MethodName] = Field(default_factory=lambda: list(METHODS), min_length=1)
    train: TrainConfig = TrainConfig()
    generator: GeneratorConfig = GeneratorConfig()
    ot: OTConfig = OTConfig()
    game: GameConfig = GameConfig()
    encoder: EncoderConfig = EncoderConfig()
    wgan_gp: WGANGPConfig = WGANGPConfig()
    ns_gan: GANConfig = GANConfig()
    shift: ShiftConfig = ShiftConfig()
    converge_fraction: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="converged once W2 has closed this fraction of the gap between the initial "
        "W2 and the best method's mean final W2",
    )
    threads: int | None = Field(1, ge=1, description="torch CPU threads during the run")

    @model_validator(mode="after")
    def _check(self) -> DROExperimentConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must be distinct")
        labels = [d.label for d in self.datasets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"datasets must be distinct, got {labels}")
        if self.shift.translate_pixels and any(d.kind != "digits" for d in self.datasets):
            raise ValueError("shift.translate_pixels applies to image data (digits) only")
        return self
