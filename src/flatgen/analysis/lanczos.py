"""Lanczos tridiagonalization with full reorthogonalization, and top-k eigenpairs from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from flatgen.analysis.hvp import LinearOperator
from flatgen.analysis.params import ProgressFn, report

Which = Literal["LA", "LM", "SA"]


class Lanczos:
    """Builds an orthonormal Krylov basis Q and tridiagonal T = Q^T A Q one product at a time.

    Every new vector is orthogonalized against the whole basis (twice: "twice is enough"), so
    T carries no ghost copies of converged eigenvalues. When the Krylov space becomes invariant
    the iteration continues from a fresh random vector orthogonal to the basis (T then splits
    into blocks), so every eigenvalue of a small operator can be reached. Memory: one vector
    of length n per step taken (the basis grows on demand up to max_iter).
    """

    def __init__(
        self,
        op: LinearOperator,
        max_iter: int,
        *,
        v0: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        self.op = op
        self.max_iter = min(max_iter, op.n)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.Q = torch.empty((min(self.max_iter, 32), op.n), dtype=op.dtype, device=op.device)
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}
        self._scale = 0.0  # running estimate of ||A||, for the breakdown test
        v = self._random() if v0 is None else v0.to(op.device, op.dtype).clone()
        self._next = v / v.norm()

    @property
    def m(self) -> int:
        """Number of basis vectors (= products) so far."""
        return len(self.alphas)

    def _random(self) -> torch.Tensor:
        v = torch.randn(self.op.n, generator=self.generator, dtype=torch.float64)
        return v.to(self.op.device, self.op.dtype)

    def _orthogonalize(self, w: torch.Tensor, m: int) -> torch.Tensor:
        basis = self.Q[:m]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        return w

    def step(self) -> None:
        """One Lanczos step: one product with the operator."""
        j = self.m
        if j >= self.max_iter:
            raise RuntimeError("Lanczos basis is full")
        q = self._next
        if j == self.Q.shape[0]:  # grow the basis storage
            grown = torch.empty(
                (min(2 * j, self.max_iter), self.op.n), dtype=self.op.dtype, device=self.op.device
            )
            grown[:j] = self.Q
            self.Q = grown
        self.Q[j] = q
        w = self.op.matvec(q)
        alpha = float(q @ w)
        w = w - alpha * q
        if j > 0:
            w = w - self.betas[-1] * self.Q[j - 1]
        w = self._orthogonalize(w, j + 1)
        beta = float(w.norm())
        self.alphas.append(alpha)
        self._scale = max(self._scale, abs(alpha) + beta + (self.betas[-1] if j else 0.0))
        eps = float(torch.finfo(self.op.dtype).eps)
        if j + 1 < self.max_iter:
            if beta <= 100 * eps * max(self._scale, 1e-30):
                # invariant subspace found: restart orthogonally, decoupling the new block
                beta = 0.0
                w = self._orthogonalize(self._random(), j + 1)
                self._next = w / w.norm()
            else:
                self._next = w / beta
        self.betas.append(beta)

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """(diagonal, off-diagonal) of T in float64."""
        return np.asarray(self.alphas, dtype=np.float64), np.asarray(self.betas[:-1], np.float64)

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors S of T, and residual norms ||A y - theta y||."""
        d, e = self.tridiagonal()
        if len(d) == 1:
            theta, s = d.copy(), np.ones((1, 1))
        else:
            theta, s = eigh_tridiagonal(d, e)
        resid = abs(self.betas[-1]) * np.abs(s[-1, :])
        return theta, s, resid


def select_ritz(theta: np.ndarray, k: int, which: Which) -> np.ndarray:
    """Indices of the k wanted Ritz values, most extreme first."""
    if which == "LA":
        order = np.argsort(-theta)
    elif which == "SA":
        order = np.argsort(theta)
    elif which == "LM":
        order = np.argsort(-np.abs(theta))
    else:
        raise ValueError(f"which must be 'LA', 'LM' or 'SA', got {which!r}")
    return order[:k]


def ritz_error_bounds(theta: np.ndarray, resid: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # |lambda - theta| <= r always, and <= r^2 / gap once theta is separated from the rest of
    # the spectrum (Kato-Temple); the Ritz gap stands in for the unknown true gap
    out = np.empty(len(idx))
    for a, i in enumerate(idx):
        others = np.delete(theta, i)
        gap = np.min(np.abs(others - theta[i])) if len(others) else np.inf
        out[a] = min(resid[i], resid[i] ** 2 / gap if gap > 0 else np.inf)
    return out


@dataclass
class EigenResult:
    """Top-k eigenpairs; unpacks as (vals, vecs)."""

    vals: torch.Tensor  # (k,) float64, most extreme first
    vecs: torch.Tensor  # (k, n) unit Ritz vectors, rows in the order of vals
    errors: torch.Tensor  # (k,) estimated absolute error of each value
    n_matvecs: int
    converged: bool

    def __iter__(self):
        yield self.vals
        yield self.vecs

    def tolist(self) -> list[float]:
        return [float(v) for v in self.vals]


def lanczos_eigs(
    op: LinearOperator,
    k: int = 5,
    *,
    which: Which = "LA",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    v0: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> EigenResult:
    """k extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Stops when every wanted Ritz value's error estimate is below tol * |value| (relative), or
    after max_iter products (converged=False then).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, op.n)
    lz = Lanczos(
        op, max_iter=max(max_iter, k), v0=v0, generator=torch.Generator().manual_seed(seed)
    )
    min_iter = min(lz.max_iter, max(k + 2, 2 * k))
    converged = False
    while True:
        lz.step()
        report(progress, lz.m, lz.max_iter)
        if lz.m < k or (lz.betas[-1] == 0.0 and lz.m < lz.max_iter):
            continue  # after a breakdown, look at least one step into the new block
        theta, s, resid = lz.ritz()
        idx = select_ritz(theta, k, which)
        err = ritz_error_bounds(theta, resid, idx)
        scale = np.maximum(np.abs(theta[idx]), 1e-6 * np.max(np.abs(theta)) + 1e-300)
        if lz.m >= min_iter and np.all(err <= tol * scale):
            converged = True
            break
        if lz.m >= lz.max_iter:
            converged = lz.m == op.n  # a full basis is exact
            break
    coeffs = torch.as_tensor(s[:, idx].T.copy(), dtype=op.dtype, device=op.device)
    vecs = coeffs @ lz.Q[: lz.m]
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    return EigenResult(
        vals=torch.as_tensor(theta[idx].copy(), dtype=torch.float64),
        vecs=vecs,
        errors=torch.as_tensor(err, dtype=torch.float64),
        n_matvecs=lz.m,
        converged=converged,
    )
