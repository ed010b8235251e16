"""The SAM variants by name: one registry that sam_adamw and the configs read.

A variant is a subclass of flatgen.optim.sam.SAM with a class attribute `name` (the config's
spelling) and `options` (the names of its own constructor arguments, e.g. LookSAM's k and
alpha), registered with the @register_sam_variant decorator where it is defined. Adding a
variant is one new class (in its own module, imported by flatgen.optim) plus its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch

from flatgen.registry import Registry

T = TypeVar("T", bound=type)

# name -> class; filled by @register_sam_variant when flatgen.optim is imported
SAM_VARIANTS: Registry[type] = Registry("SAM variant")


def register_sam_variant(cls: T) -> T:
    """Class decorator: add `cls` to SAM_VARIANTS under `cls.name` (a name may be taken once)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered")
    SAM_VARIANTS.register(name, cls)
    return cls


def sam_variant_names() -> tuple[str, ...]:
    """The registered variant names, in registration order (the built-ins first)."""
    return SAM_VARIANTS.names()


def sam_variant(name: str) -> type:
    """The class of a registered variant; ValueError naming the choices otherwise."""
    return SAM_VARIANTS.get(name)


def _variant_options(cls: type, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options `cls` takes. Options of other variants are dropped (a config carries k and
    alpha whatever the variant); names no variant knows are refused (a typo)."""
    options = dict(options or {})
    known = {o for c in SAM_VARIANTS.values() for o in getattr(c, "options", ())}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown SAM variant option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return {k: v for k, v in options.items() if k in cls.options}


def sam_adamw(
    params: Iterable[torch.Tensor] | Iterable[dict],
    variant: str,
    *,
    rho: float | Callable[[int], float],
    adaptive: bool = False,
    eta: float = 0.01,
    options: Mapping[str, Any] | None = None,
    **adamw_kwargs: Any,
) -> torch.optim.Optimizer:
    """AdamW wrapped in the registered SAM variant `variant` (see sam_variant_names()).

    adaptive: ASAM with T = |w| + eta; options: the variant's own arguments (e.g. k, alpha),
    those of other variants ignored; adamw_kwargs go to torch.optim.AdamW.
    """
    cls = sam_variant(variant)
    return cls(
        params, torch.optim.AdamW, rho=rho, adaptive=adaptive, eta=eta,
        **_variant_options(cls, options), **adamw_kwargs,
    )  # fmt: skip
