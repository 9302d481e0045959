"""Adam stepped by torch's fused kernel, without ``torch.optim``'s import of the compiler.

In torch 2.13 every ``torch.optim`` optimizer imports ``torch._dynamo`` on its first call
(``add_param_group``, ``zero_grad``, ``step``: hooks for graph breaks that only compiled code
needs), 1.2–1.6 s of a process on the 2-core machines — 7% of a whole
``relrec train --preset cf`` (BENCHMARKS.md, training speed). :class:`FusedAdam` calls the
kernel ``torch.optim.Adam(fused=True)`` itself runs, ``torch._fused_adam_``, on the same state,
so its updates are the same bits (tests/train/test_optimizer.py) and its ``state_dict`` has
``torch.optim``'s layout. :func:`adam` falls back to ``torch.optim.Adam`` where the kernel is
missing or the device has none.
"""

from __future__ import annotations

import torch


class FusedAdam:
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as
    ``torch.optim.Adam(params, lr, betas, eps, weight_decay, fused=True)``; one parameter
    group. ``param_groups[0]["lr"]`` may be changed between steps (a schedule)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = list(params)
        if any(p.is_sparse for p in self.params):
            raise ValueError("FusedAdam takes dense parameters (SparseAdam for sparse ones)")
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps,
                              "weight_decay": weight_decay,
                              "params": list(range(len(self.params)))}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.params:
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.detach_().zero_()

    def _state_of(self, parameter: torch.Tensor) -> dict[str, torch.Tensor]:
        if parameter not in self.state:
            # the fused kernel keeps the step count as a float32 tensor on the device
            self.state[parameter] = {
                "step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format)}
        return self.state[parameter]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        # the kernel takes lists of one device and dtype (torch.optim groups them the same way)
        by_kind: dict[tuple, list[torch.Tensor]] = {}
        for parameter in self.params:
            if parameter.grad is None:
                continue
            if parameter.grad.is_sparse:
                raise RuntimeError("FusedAdam got a sparse gradient; use SparseAdam for it")
            by_kind.setdefault((parameter.device, parameter.dtype), []).append(parameter)
        for parameters in by_kind.values():
            states = [self._state_of(parameter) for parameter in parameters]
            steps = [state["step"] for state in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(parameters, [parameter.grad for parameter in parameters],
                               [state["exp_avg"] for state in states],
                               [state["exp_avg_sq"] for state in states], [], steps,
                               amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                               weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict:
        """``torch.optim``'s layout: state by parameter position, the hyper-parameters."""
        state = {index: dict(self.state[parameter]) for index, parameter in enumerate(self.params)
                 if parameter in self.state}
        groups = [{**group, "betas": list(group["betas"])} for group in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        (group,) = state_dict["param_groups"]
        unsupported = [name for name in ("amsgrad", "maximize", "decoupled_weight_decay",
                                         "differentiable") if group.get(name)]
        if unsupported:  # torch.optim.Adam's variants this one does not run
            raise ValueError(f"optimizer state with {', '.join(unsupported)} set: FusedAdam "
                             "runs plain Adam")
        if len(group["params"]) != len(self.params):
            raise ValueError(f"optimizer state for {len(group['params'])} parameters, "
                             f"this optimizer has {len(self.params)}")
        self.param_groups = [{**group, "betas": tuple(group["betas"]),
                              "params": list(range(len(self.params)))}]
        self.state = {}
        for index, values in state_dict["state"].items():
            parameter = self.params[int(index)]
            self.state[parameter] = {
                name: value.to(device=parameter.device,
                               dtype=torch.float32 if name == "step" else parameter.dtype)
                for name, value in values.items()}


def adam(params, lr: float, weight_decay: float = 0.0):
    """:class:`FusedAdam` where torch has the fused kernel for the parameters' device (CPU,
    CUDA), else ``torch.optim.Adam`` (its per-tensor loop)."""
    params = list(params)
    devices = {parameter.device.type for parameter in params}
    if hasattr(torch, "_fused_adam_") and devices <= {"cpu", "cuda"}:
        return FusedAdam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
