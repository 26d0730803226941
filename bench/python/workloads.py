"""Benchmark workloads: models, batches, and the raw float32 weights/batch files.

Every workload is float32 with MSE loss and forward(x, cond_or_None): cond=None
uses the learned `null` embedding. Weights come from PyTorch's default init
after torch.manual_seed(SEED); the batch from a separate generator seeded SEED.
See README.md for the on-disk format written by save()/load().
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from text2data_ref import Denoiser

SEED = 1234


class Block(nn.Module):
    """Pre-norm transformer block, written out so it is easy to mirror in Java:
    z = z + proj(attn(ln1(z)));  z = z + fc2(gelu(fc1(ln2(z))))
    attn: qkv = qkv(x) split into q, k, v (each [B, S, dm]) -> heads of dm/heads,
    softmax(q k^T / sqrt(dm/heads)) v, no mask; gelu is the exact (erf) one;
    LayerNorm eps 1e-5."""

    def __init__(self, dm, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dm)
        self.qkv = nn.Linear(dm, 3 * dm)
        self.proj = nn.Linear(dm, dm)
        self.ln2 = nn.LayerNorm(dm)
        self.fc1 = nn.Linear(dm, ff)
        self.fc2 = nn.Linear(ff, dm)

    def forward(self, z):
        b, s, dm = z.shape
        hd = dm // self.heads
        q, k, v = self.qkv(self.ln1(z)).split(dm, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1) @ v
        z = z + self.proj(a.transpose(1, 2).reshape(b, s, dm))
        return z + self.fc2(F.gelu(self.fc1(self.ln2(z))))


class TransformerDenoiser(nn.Module):
    """x: [B, S, d] tokens, cond: [B, c].
    z = inp(x) + pos + cin(e)[:, None, :]  (e = cond, or null broadcast to [B, c])
    z = block_i(z) for each i;  return out(ln_f(z))."""

    def __init__(self, d, c, dm, layers, heads, seq, ff):
        super().__init__()
        self.null = nn.Parameter(torch.randn(c) * 0.02)
        self.cin = nn.Linear(c, dm)
        self.inp = nn.Linear(d, dm)
        self.pos = nn.Parameter(torch.randn(seq, dm) * 0.02)
        self.blocks = nn.ModuleList([Block(dm, heads, ff) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dm)
        self.out = nn.Linear(dm, d)

    def forward(self, x, cond=None):
        e = self.null.expand(x.shape[0], self.null.shape[0]) if cond is None else cond
        z = self.inp(x) + self.pos + self.cin(e).unsqueeze(1)
        for blk in self.blocks:
            z = blk(z)
        return self.out(self.ln_f(z))


# name -> (model kind, model config, batch size[, sequence length])
WORKLOADS = {
    "mlp-deep-small": dict(kind="mlp", d=16, c=16, h=64, layers=16, batch=32),
    "mlp-deep": dict(kind="mlp", d=64, c=32, h=256, layers=8, batch=256),
    "mlp-wide": dict(kind="mlp", d=64, c=32, h=2048, layers=3, batch=256),
    "transformer-small": dict(kind="transformer", d=16, c=32, dm=64, layers=4, heads=4,
                              seq=16, ff=256, batch=64),
}


def build_model(cfg):
    if cfg["kind"] == "mlp":
        return Denoiser(cfg["d"], cfg["c"], cfg["h"], cfg["layers"])
    return TransformerDenoiser(cfg["d"], cfg["c"], cfg["dm"], cfg["layers"], cfg["heads"],
                               cfg["seq"], cfg["ff"])


def batch_shapes(cfg):
    x = [cfg["batch"], cfg["seq"], cfg["d"]] if cfg["kind"] == "transformer" else [cfg["batch"], cfg["d"]]
    return {"data": x, "cond": [cfg["batch"], cfg["c"]], "label": x}


def make(name):
    """Fresh (model, {data, cond, label}) from the fixed seed, float32."""
    cfg = WORKLOADS[name]
    torch.manual_seed(SEED)
    model = build_model(cfg).float()
    gen = torch.Generator().manual_seed(SEED)
    batch = {k: torch.randn(s, generator=gen) for k, s in batch_shapes(cfg).items()}
    return model, batch


def save(path_prefix, name, model, batch):
    """Write PREFIX.bin (raw little-endian float32) and PREFIX.json (index)."""
    entries, offset, chunks = {"params": [], "batch": []}, 0, []
    for section, items in (("params", model.state_dict().items()), ("batch", batch.items())):
        for k, t in items:
            t = t.detach().to(torch.float32).contiguous()
            entries[section].append({"name": k, "shape": list(t.shape), "offset": offset,
                                     "numel": t.numel()})
            chunks.append(t.numpy().astype("<f4").tobytes())
            offset += 4 * t.numel()
    index = {"workload": name, "config": WORKLOADS[name], "dtype": "float32",
             "byte_order": "little", "file": os.path.basename(path_prefix) + ".bin",
             "total_bytes": offset, **entries}
    with open(path_prefix + ".bin", "wb") as fh:
        fh.write(b"".join(chunks))
    with open(path_prefix + ".json", "w") as fh:
        json.dump(index, fh, indent=1)


def load(path_prefix, name):
    """Read the files written by save(); returns (model, batch)."""
    import numpy as np
    with open(path_prefix + ".json") as fh:
        index = json.load(fh)
    raw = np.fromfile(path_prefix + ".bin", dtype="<f4")

    def get(e):
        start = e["offset"] // 4
        return torch.from_numpy(raw[start:start + e["numel"]].astype("float32")).reshape(e["shape"])

    model = build_model(WORKLOADS[name]).float()
    model.load_state_dict({e["name"]: get(e) for e in index["params"]})
    return model, {e["name"]: get(e) for e in index["batch"]}


def get(name, weights_dir=None):
    """The workload's model and batch; with weights_dir, saved once and reused."""
    if weights_dir is None:
        return make(name)
    prefix = os.path.join(weights_dir, name)
    if not (os.path.exists(prefix + ".json") and os.path.exists(prefix + ".bin")):
        os.makedirs(weights_dir, exist_ok=True)
        save(prefix, name, *make(name))
    return load(prefix, name)
