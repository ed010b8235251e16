"""Pydantic models of the classifier study config (`task: classifier`); unknown keys are errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from flatgen.config import SAMConfig, Seeds

NormName = Literal["linf", "l2"]
AttackName = Literal["fgsm", "pgd"]
SharpnessName = Literal["lambda_max", "trace", "worst_case", "average_case"]
# names this config used before it shared the diffusion vocabulary, and what to write instead
RENAMED = {"asam": "{method: sam, adaptive: true}", "sam_every_k": "sam-every-k"}


class _Strict(BaseModel):
    # strict: a boolean is not a number, a number not a name; inf / nan are refused
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _labelled_dataset(v: str) -> str:
    from flatgen.data import get_dataset  # the registry of flatgen.data

    get_dataset(v, labelled=True)  # ValueError naming the datasets with labels
    return v


def _classifier_preset(v: str | None) -> str | None:
    from flatgen.classify.models import classifier_preset

    if v is not None:
        classifier_preset(v)  # ValueError naming the registered presets
    return v


class DataSpec(_Strict):
    """Labelled images (a dataset of flatgen.data with labels); pixels are fed to the classifier
    in [0, 1]."""

    name: Annotated[str, AfterValidator(_labelled_dataset)] = "digits"
    path: str | None = None  # cifar10: the local folder holding cifar-10-batches-bin
    n_train: int | None = Field(None, gt=0)  # None: the whole training split
    n_test: int | None = Field(None, gt=0)  # None: the whole test split (digits: 297 images)

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        from flatgen.data import check_data_options

        check_data_options(self)  # data.path where the dataset needs one
        return self


class ModelSpec(_Strict):
    """A classifier preset of flatgen.classify.models; None picks the first one made for the
    data's image shape (cnn-digits / cnn-cifar)."""

    preset: Annotated[str | None, AfterValidator(_classifier_preset)] = None
    channels: list[int] | None = None  # per stage; None keeps the preset's
    hidden: int | None = Field(None, gt=0)


class TrainSpec(_Strict):
    steps: int = Field(500, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(2e-3, gt=0)  # AdamW for every method (the SAM family wraps it)
    # flatgen.train.schedule, as in train configs: linear warm-up, then constant or a cosine
    # down to lr / 10 at the end
    warmup_steps: int = Field(0, ge=0)
    lr_decay: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(None, gt=0)
    cpu: bool = False  # force the CPU even where a GPU exists


class _Method(_Strict):
    """Fields every method has: a label and the model-side regularizers."""

    method: str
    name: str | None = None  # label in the table; defaults to `method`
    weight_decay: float = Field(0.0, ge=0)  # AdamW's decoupled weight decay
    dropout: float = Field(0.0, ge=0, lt=1)
    spectral_norm: bool = False

    @property
    def label(self) -> str:
        return self.name or self.method


class PlainMethod(_Method):
    """Cross-entropy on clean inputs; weight_decay / dropout / spectral_norm switch theirs on."""

    method: Literal["plain", "weight_decay", "dropout", "spectral_norm"] = "plain"

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        defaults = {
            "weight_decay": {"weight_decay": 1.0},
            "dropout": {"dropout": 0.3},
            "spectral_norm": {"spectral_norm": True},
        }
        if isinstance(data, dict):
            return {**defaults.get(data.get("method", "plain"), {}), **data}
        return data


def _registered_sam_variant(v: str) -> str:
    from flatgen.optim.registry import sam_variant

    sam_variant(v)  # ValueError naming the registered variants
    return v


# the SAM options a method entry writes beside `method`: the diffusion config's SAMConfig fields
# (one schema: names, defaults, checks), less `variant` (the entry's `method`) and
# `sync_perturbation` (DDP; a classifier run is one process)
SAM_OPTIONS = tuple(k for k in SAMConfig.model_fields if k not in ("variant", "sync_perturbation"))
# before the classifier shared the diffusion config's SAM schema, rho None meant 0.05, or 0.5
# with adaptive: how a results.json of that time reads back
_LEGACY_RHO = {False: 0.05, True: 0.5}


class SAMMethod(_Method):
    """The SAM family from flatgen.optim, named as in the diffusion config (sam, looksam,
    momentumsam, sam-every-k), with the diffusion config's SAM options written flat beside
    `method` (`{method: looksam, rho: 0.05, k: 5}`; `adaptive: true` makes any of them ASAM).
    They are validated as, and kept in, `sam`: the diffusion config's SAMConfig (its fields,
    defaults and checks), whose `variant` is `method`."""

    method: Annotated[str, AfterValidator(_registered_sam_variant)]
    sam: SAMConfig

    @model_validator(mode="before")
    @classmethod
    def _as_sam_config(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "sam" in data:  # "sam": a dumped config read back
            return data
        data = dict(data)
        options = {k: data.pop(k) for k in SAM_OPTIONS if k in data}
        if "rho" in options and options["rho"] is None:
            options["rho"] = _LEGACY_RHO[bool(options.get("adaptive", False))]
        return {**data, "sam": {"variant": data.get("method"), **options}}

    @model_validator(mode="after")
    def _same_variant(self) -> SAMMethod:
        if self.sam.variant != self.method:
            raise ValueError(f"sam.variant {self.sam.variant!r} must be the method, "
                             f"{self.method!r}")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.sam.adaptive:
            return "asam" if self.method == "sam" else f"{self.method}-adaptive"
        return self.method


class AdversarialMethod(_Method):
    """Madry et al.: train on PGD examples within the eps-ball (inputs in [0, 1])."""

    method: Literal["pgd_at"]
    eps: float = Field(0.1, gt=0)
    norm: NormName = "linf"
    steps: int = Field(7, ge=1)
    step_size: float | None = Field(None, gt=0)  # None: 2.5 * eps / steps
    random_start: bool = True


class DistillationMethod(_Method):
    """Papernot et al.: a teacher trained at temperature T, a student on its soft labels at T,
    the student deployed at T = 1."""

    method: Literal["distillation"]
    temperature: float = Field(20.0, gt=0)
    teacher_steps: int | None = Field(None, gt=0)  # None: train.steps


class WRMMethod(_Method):
    """WRM (Sinha et al.): train on inputs moved to sup_x loss(x) - gamma ||x - x0||^2.

    Its guarantee assumes a loss smooth in x with gamma above the smoothness constant, so the
    network uses a smooth activation. After training, the certificate is computed on test
    images with a longer ascent and labelled "certificate" or "estimate" (flatgen.optim.wrm).
    """

    method: Literal["wrm"]
    gamma: float = Field(1.0, gt=0)
    steps: int = Field(15, ge=0)
    step_size: float | None = Field(None, gt=0)  # None: 1 / (2 gamma)
    activation: Literal["softplus", "elu", "relu"] = "softplus"
    certificate_steps: int = Field(100, ge=1)  # inner ascent steps for the certificate
    grad_tol: float = Field(1e-3, gt=0)  # converged: every inner gradient norm below this


PLAIN_NAMES = ("plain", "weight_decay", "dropout", "spectral_norm")


def _method_kind(v: Any) -> str | None:
    """Which model a method entry is: its own name, "plain", or "sam" for a registered SAM
    variant (flatgen.optim's registry, the same names as the diffusion config's sam.variant)."""
    from flatgen.optim.registry import sam_variant_names

    name = v.get("method", "plain") if isinstance(v, dict) else getattr(v, "method", None)
    if name in PLAIN_NAMES:
        return "plain"
    if name in ("pgd_at", "distillation", "wrm"):
        return name
    return "sam" if name in sam_variant_names() else None


MethodSpec = Annotated[
    Annotated[PlainMethod, Tag("plain")]
    | Annotated[SAMMethod, Tag("sam")]
    | Annotated[AdversarialMethod, Tag("pgd_at")]
    | Annotated[DistillationMethod, Tag("distillation")]
    | Annotated[WRMMethod, Tag("wrm")],
    Discriminator(
        _method_kind,
        custom_error_type="unknown_method",
        custom_error_message="method must be plain, weight_decay, dropout, spectral_norm, "
        "pgd_at, distillation, wrm or a SAM variant of flatgen.optim",
    ),
]


def method_names() -> tuple[str, ...]:
    """Every method name a config may use (the SAM variants from flatgen.optim's registry)."""
    from flatgen.optim.registry import sam_variant_names

    return (*PLAIN_NAMES, *sam_variant_names(), "pgd_at", "distillation", "wrm")


class AttackSpec(_Strict):
    """Robust accuracy on the test split under FGSM / PGD, per norm and eps (inputs in [0, 1])."""

    attacks: list[AttackName] = Field(default_factory=lambda: ["fgsm", "pgd"])
    eps_linf: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    eps_l2: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    pgd_steps: int = Field(20, ge=1)  # step size 2.5 * eps / pgd_steps
    random_start: bool = True
    batch_size: int = Field(512, gt=0)

    @field_validator("eps_linf", "eps_l2")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(e <= 0 for e in v):
            raise ValueError(f"eps must be > 0 (eps = 0 is the clean accuracy), got {v}")
        return sorted(set(v))


class SharpnessSpec(_Strict):
    """Flatness of the training loss (cross-entropy at T = 1) on a fixed batch."""

    n_batch: int = Field(256, gt=0)  # the same training images for every model
    lanczos_iter: int = Field(30, ge=2)  # Hessian-vector products for lambda_max at most
    trace_matvecs: int = Field(30, ge=3)  # Hutch++
    rho: float = Field(0.1, gt=0)  # worst case: L2 radius in weight space
    ascent_steps: int = Field(5, ge=1)
    sigma: float = Field(0.05, gt=0)  # average case: per-filter relative noise level
    draws: int = Field(8, ge=2)


class PrimarySpec(_Strict):
    """The one test the verdict rests on, declared before running: a sharpness measure against
    the robust accuracy under one attack (norm, eps)."""

    sharpness: SharpnessName = "lambda_max"
    attack: AttackName = "pgd"
    norm: NormName = "linf"
    eps: float | None = Field(None, gt=0)  # None: the middle eps of that norm's list


class CorrelationSpec(_Strict):
    """Spearman between sharpness and robust accuracy, one point per method (mean over seeds).

    The primary pair decides the verdict. Every other measure x accuracy column, over all
    methods and within each declared subset, is exploratory and Holm-adjusted as one family.
    """

    primary: PrimarySpec = Field(default_factory=PrimarySpec)
    alpha: float = Field(0.05, gt=0, lt=1)  # significance level of the verdict
    # named subsets of method labels, declared before running, to correlate within as well
    subsets: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, data: Any) -> Any:
        # the attack / norm / eps of older configs named the primary attack
        if isinstance(data, dict) and {"attack", "norm", "eps"} & set(data):
            data = dict(data)
            old = {k: data.pop(k) for k in ("attack", "norm", "eps") if k in data}
            data["primary"] = {**old, **dict(data.get("primary") or {})}
        return data


class ClassifierStudyConfig(_Strict):
    """Methods x seeds on one dataset: clean and robust accuracy, sharpness, their correlation."""

    task: Literal["classifier"] = "classifier"
    name: str = "classifier-study"
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    methods: list[MethodSpec] = Field(default_factory=lambda: [PlainMethod()])
    attacks: AttackSpec = Field(default_factory=AttackSpec)
    sharpness: SharpnessSpec = Field(default_factory=SharpnessSpec)
    correlation: CorrelationSpec = Field(default_factory=CorrelationSpec)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default

    @field_validator("methods", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # "sam" is short for {method: sam}
        if not isinstance(v, list):
            return v
        v = [{"method": m} if isinstance(m, str) else m for m in v]
        for m in v:
            if isinstance(m, dict) and m.get("method") in RENAMED:
                old = m["method"]
                raise ValueError(
                    f"method {old!r} is now written {RENAMED[old]} (as in train configs)"
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> ClassifierStudyConfig:
        if not self.methods:
            raise ValueError("at least one method")
        labels = [m.label for m in self.methods]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"method labels must be unique (set `name`): {', '.join(dup)}")
        bad = [x for x in labels if not x.replace("-", "").replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"method names may hold letters, digits, - and _ only: {bad}")
        unknown = sorted({m for ms in self.correlation.subsets.values() for m in ms} - set(labels))
        if unknown:
            raise ValueError(f"correlation.subsets name unknown methods: {', '.join(unknown)}")
        p = self.correlation.primary
        eps = self.attacks.eps_linf if p.norm == "linf" else self.attacks.eps_l2
        if p.attack not in self.attacks.attacks or not eps:
            raise ValueError(
                "correlation.primary attack / norm must be among the evaluated attacks"
            )
        if p.eps is not None and p.eps not in eps:
            raise ValueError(f"correlation.primary.eps must be one of {eps}")
        return self

    @property
    def target_eps(self) -> float:
        """The eps of the primary robust accuracy."""
        p = self.correlation.primary
        if p.eps is not None:
            return p.eps
        eps = self.attacks.eps_linf if p.norm == "linf" else self.attacks.eps_l2
        return eps[len(eps) // 2]
