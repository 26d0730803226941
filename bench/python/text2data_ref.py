"""Clean-room Python reference of Text2Data's constrained step.

Written from the conformance README (shared/conformance/README.md) (no code copied). Targets
PyTorch 1.13 (Debian's python3-torch); run with /usr/bin/python3.

The constrained step, per parameter tensor p with gradient g and constraint
gradient c (the gradient of the unconditional loss):

    n   = ||c||^2
    phi = min(alpha * (g_value - g_constraint), beta * n)
    lam = max(0, (phi - <g, c>) / (1e-8 + n))
    g  <- g + lam * c
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Constraint(torch.optim.Optimizer):
    """Wraps a base optimizer; projects the gradients before the base step."""

    def __init__(self, params, base_optimizer, alpha=1, beta=1, **kwargs):
        defaults = dict(alpha=alpha, beta=beta, **kwargs)
        super().__init__(params, defaults)
        # The base optimizer works on the very same param groups (same dicts),
        # so lr changes and zero_grad on either object affect both.
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.g_value = None
        self.g_constraint = None

    @torch.no_grad()
    def first_step(self, zero_grad=False, g_value=None):
        """Keep a copy of every current gradient as the constraint gradient."""
        if g_value is not None:
            self.g_value = float(g_value)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    self.state[p].pop("constraint_grad", None)
                    continue
                self.state[p]["constraint_grad"] = p.grad.detach().clone()
        if zero_grad:
            self.zero_grad(set_to_none=False)  # as PyTorch 1.13's default: zeroes grads, keeps them

    @torch.no_grad()
    def second_step(self, zero_grad=False, g_value=None, g_constraint=None):
        """Project each gradient in place, one tensor at a time."""
        if g_value is not None:
            self.g_value = float(g_value)
        if g_constraint is not None:
            self.g_constraint = float(g_constraint)
        gap = self.g_value - self.g_constraint
        for group in self.param_groups:
            alpha, beta = group["alpha"], group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                c = self.state[p].get("constraint_grad")
                if c is None:
                    continue  # c treated as zero: g is left unchanged
                g = p.grad
                n = (c * c).sum()
                phi = torch.clamp(beta * n, max=alpha * gap)  # min(alpha*gap, beta*n)
                lam = torch.clamp((phi - (g * c).sum()) / (1e-8 + n), min=0)
                g.add_(lam * c)
        if zero_grad:
            self.zero_grad(set_to_none=False)

    def step(self, closure=None, g_value=None, g_constraint=None):
        """Full constrained step, same arithmetic as run_step.

        closure(cond_pass: bool) computes the unconditional (False) or the
        conditional (True) loss, calls backward on it and returns it. Grads are
        zeroed here before each pass; g_value defaults to the unconditional loss.
        """
        assert closure is not None, "Constraint.step needs a closure"
        self.zero_grad(set_to_none=False)
        with torch.enable_grad():
            g = closure(False)
        self.first_step(zero_grad=True, g_value=g.item() if g_value is None else g_value)
        with torch.enable_grad():
            f = closure(True)
        self.second_step(g_constraint=g_constraint)
        self.base_optimizer.step()
        return g, f


def run_step(optimizer, g_constraint, model, cond, data, label, loss_fn, g_value=None):
    """One constrained training step; returns (unconditional loss, conditional loss).

    g_value, when given, is the unconditional loss the projection uses instead of the one this
    step computes (the conformance check hands over a fixture's recorded g this way)."""
    optimizer.zero_grad(set_to_none=False)  # PyTorch 1.13's default; 2.x would drop the grads
    g = loss_fn(model(data, None), label)
    g.backward()
    optimizer.first_step(zero_grad=True, g_value=g.item() if g_value is None else g_value)
    f = loss_fn(model(data, cond), label)
    f.backward()
    optimizer.second_step(g_constraint=g_constraint)
    optimizer.base_optimizer.step()
    return g, f


class Denoiser(nn.Module):
    """null: [c], cin: Linear(c,h), inp: Linear(d,h), hid.i: Linear(h,h), out: Linear(h,d)."""

    def __init__(self, d, c, h, layers):
        super().__init__()
        self.null = nn.Parameter(torch.zeros(c))
        self.cin = nn.Linear(c, h)
        self.inp = nn.Linear(d, h)
        self.hid = nn.ModuleList([nn.Linear(h, h) for _ in range(layers)])
        self.out = nn.Linear(h, d)

    def forward(self, x, cond=None):
        e = self.null.expand(x.shape[0], self.null.shape[0]) if cond is None else cond
        z = F.silu(self.inp(x) + self.cin(e))
        for layer in self.hid:
            z = F.silu(layer(z))
        return self.out(z)

    @staticmethod
    def from_state_dict(d, c, h, layers, state, dtype=torch.float64):
        """Build from a {name: tensor} state dict (e.g. a fixture's `init`)."""
        m = Denoiser(d, c, h, layers).to(dtype)
        m.load_state_dict(state)
        return m


BASE_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(params, spec, alpha=1, beta=1):
    """spec: {"type": "adam"|"adamw"|"sgd", "lr": ..., other torch options}."""
    opts = {k: v for k, v in spec.items() if k != "type"}
    return Constraint(params, BASE_OPTIMIZERS[spec["type"]], alpha=alpha, beta=beta, **opts)
