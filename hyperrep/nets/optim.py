"""One optimiser over a whole population: a [models, params] tensor with a learning rate per model."""

from __future__ import annotations

import torch


class PopulationOptimizer:
    """Adam or SGD (momentum 0.9) over a [models, params] tensor, each model with its own rate.

    One update for all models, elementwise, so each model follows exactly the trajectory that
    torch.optim.Adam / SGD gives it alone (the same formulas, in the same order)."""

    def __init__(self, name: str, params: torch.Tensor, lr: torch.Tensor, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum: float = 0.9):
        if name not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")
        self.name, self.params, self.weight_decay = name, params, weight_decay
        self.lr = torch.as_tensor(lr, dtype=params.dtype, device=params.device).reshape(-1, 1)
        self.betas, self.eps, self.momentum = betas, eps, momentum
        self.steps = 0
        self.first = torch.zeros_like(params)  # Adam's exp_avg, SGD's momentum buffer
        self.second = torch.zeros_like(params) if name == "adam" else None

    def advance(self) -> int:
        """Count one more step (Adam's bias corrections and SGD's first step depend on it)."""
        self.steps += 1
        return self.steps

    def bias_corrections(self) -> tuple[float, float]:
        """Adam's 1 - beta1^t and sqrt(1 - beta2^t) for the current step, as torch computes them."""
        beta1, beta2 = self.betas
        return 1 - beta1 ** self.steps, (1 - beta2 ** self.steps) ** 0.5

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """Update `params` in place from `grad` [M, P] (the torch path; the CPU kernel fuses it)."""
        self.advance()
        if self.weight_decay:
            grad = grad.add(self.params, alpha=self.weight_decay)
        if self.name == "sgd":
            self.first.copy_(grad) if self.steps == 1 else self.first.mul_(self.momentum).add_(grad)
            self.params.sub_(self.lr * self.first)
            return
        beta1, beta2 = self.betas
        correction1, correction2_sqrt = self.bias_corrections()
        self.first.lerp_(grad, 1 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / correction1
        denom = (self.second.sqrt() / correction2_sqrt).add_(self.eps)
        self.params.sub_(step_size * self.first / denom)
