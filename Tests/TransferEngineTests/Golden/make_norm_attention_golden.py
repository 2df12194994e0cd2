#!/usr/bin/python3
"""Writes norm_attention.json: reference outputs (and a few gradients) from PyTorch for NormAttentionLossTests.

Run with Debian's python3-torch (1.13): /usr/bin/python3 make_norm_attention_golden.py
Tensors are stored flat (row-major) with their shapes. Image-like tensors are NHWC as in the engine; they are
permuted to NCHW only to call PyTorch's BatchNorm2d. Where a gradient is stored, the scalar differentiated is
sum(output * upstream) with the stored `upstream`.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(20240607)


def flat(t):
    return [round(float(v), 7) for v in t.detach().reshape(-1).tolist()]


def entry(t):
    return {"shape": list(t.shape), "values": flat(t)}


golden = {}

# LayerNorm over the last axis, BERT's eps.
x = (torch.randn(3, 8) * 2 + 0.5).requires_grad_()
w = torch.randn(8).requires_grad_()
b = torch.randn(8).requires_grad_()
y = F.layer_norm(x, (8,), w, b, eps=1e-12)
up = torch.rand(3, 8) + 0.5
(y * up).sum().backward()
golden["layer_norm"] = {"x": entry(x), "weight": entry(w), "bias": entry(b), "eps": 1e-12, "y": entry(y),
                        "upstream": entry(up), "dx": entry(x.grad), "dweight": entry(w.grad), "dbias": entry(b.grad)}

# BatchNorm: one training step (batch statistics, running update with momentum 0.1 and 0.01), then eval.
n, h, wd, c = 2, 3, 3, 4
x_nhwc = (torch.randn(n, h, wd, c) * 1.5 + torch.tensor([0.3, -1.0, 2.0, 0.0])).requires_grad_()
bn_w = torch.randn(c).requires_grad_()
bn_b = torch.randn(c).requires_grad_()
rm0 = torch.randn(c) * 0.1
rv0 = torch.rand(c) + 0.5
up = torch.rand(n, h, wd, c) + 0.5
bn = {"x": entry(x_nhwc), "weight": entry(bn_w), "bias": entry(bn_b), "running_mean": entry(rm0),
      "running_var": entry(rv0), "eps": 1e-5, "upstream": entry(up)}
for momentum, key in [(0.1, "m0_1"), (0.01, "m0_01")]:
    rm, rv = rm0.clone(), rv0.clone()
    x_nchw = x_nhwc.permute(0, 3, 1, 2)
    y = F.batch_norm(x_nchw, rm, rv, bn_w, bn_b, training=True, momentum=momentum, eps=1e-5).permute(0, 2, 3, 1)
    bn[key] = {"momentum": momentum, "y": entry(y), "running_mean": entry(rm), "running_var": entry(rv)}
    if key == "m0_1":
        (y * up).sum().backward()
        bn[key].update({"dx": entry(x_nhwc.grad), "dweight": entry(bn_w.grad), "dbias": entry(bn_b.grad)})
        # Eval with the updated statistics.
        for t in (x_nhwc, bn_w, bn_b):
            t.grad = None
        ye = F.batch_norm(x_nhwc.permute(0, 3, 1, 2), rm, rv, bn_w, bn_b, training=False, eps=1e-5).permute(0, 2, 3, 1)
        (ye * up).sum().backward()
        bn["eval"] = {"y": entry(ye), "dx": entry(x_nhwc.grad), "dweight": entry(bn_w.grad), "dbias": entry(bn_b.grad)}
# Cumulative average (momentum=None) over two batches, from reset statistics (mean 0, var 1).
module = torch.nn.BatchNorm2d(c, momentum=None)
module.train()
x2 = torch.randn(3, h, wd, c) * 0.7 - 0.4
with torch.no_grad():
    module(x_nhwc.detach().permute(0, 3, 1, 2))
    module(x2.permute(0, 3, 1, 2))
bn["cumulative"] = {"x2": entry(x2), "running_mean": entry(module.running_mean),
                    "running_var": entry(module.running_var)}
golden["batch_norm"] = bn

# Softmax / log-softmax with large logits (stability), along the last axis and along axis 1 of a 3-D tensor.
z = torch.randn(4, 7) * 30
z3 = torch.randn(2, 5, 3)
golden["softmax"] = {"x": entry(z), "softmax": entry(F.softmax(z, -1)), "log_softmax": entry(F.log_softmax(z, -1)),
                     "x3": entry(z3), "softmax_axis1": entry(F.softmax(z3, 1)),
                     "log_softmax_axis1": entry(F.log_softmax(z3, 1))}

# Attention with key padding: op (manual formula, -1e9 additive mask) and module (nn.MultiheadAttention).
B, T, H, D = 2, 5, 2, 3
E = H * D
q = torch.randn(B, T, E)
k = torch.randn(B, T, E)
v = torch.randn(B, T, E)
valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.float32)


def heads(t):
    return t.reshape(B, T, H, D).permute(0, 2, 1, 3)


scores = heads(q) @ heads(k).transpose(-1, -2) / D ** 0.5 + ((1 - valid) * -1e9)[:, None, None, :]
attn = (torch.softmax(scores, -1) @ heads(v)).permute(0, 2, 1, 3).reshape(B, T, E)
mha = torch.nn.MultiheadAttention(E, H, batch_first=True)
xa = torch.randn(B, T, E)
with torch.no_grad():
    ym, _ = mha(xa, xa, xa, key_padding_mask=valid == 0, need_weights=False)
wq, wk, wv = mha.in_proj_weight.chunk(3)
bq, bk, bv = mha.in_proj_bias.chunk(3)
golden["attention"] = {
    "heads": H, "q": entry(q), "k": entry(k), "v": entry(v), "valid": entry(valid), "y": entry(attn),
    "module": {"x": entry(xa), "query.weight": entry(wq), "query.bias": entry(bq), "key.weight": entry(wk),
               "key.bias": entry(bk), "value.weight": entry(wv), "value.bias": entry(bv),
               "out.weight": entry(mha.out_proj.weight), "out.bias": entry(mha.out_proj.bias), "y": entry(ym)}}

# Losses.
logits = (torch.randn(6, 4) * 2).requires_grad_()
labels = torch.tensor([0, 3, 1, 1, 2, 3])
cw = torch.tensor([0.5, 2.0, 1.0, 1.5])
ce = {"logits": entry(logits), "labels": labels.tolist(), "class_weights": flat(cw)}
for key, kwargs in [("plain", {}), ("smooth", {"label_smoothing": 0.1}), ("weighted", {"weight": cw}),
                    ("weighted_smooth", {"weight": cw, "label_smoothing": 0.1})]:
    logits.grad = None
    loss = F.cross_entropy(logits, labels, **kwargs)
    loss.backward()
    ce[key] = {"loss": float(loss), "dlogits": entry(logits.grad)}
golden["cross_entropy"] = ce

bl = torch.tensor([[0.3, -2.0, 35.0], [-40.0, 1.5, 0.0], [4.0, -0.7, -3.0], [0.05, 12.0, -9.0]]).requires_grad_()
bt = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0], [1.0, 0.0, 1.0]])
loss = F.binary_cross_entropy_with_logits(bl, bt)
loss.backward()
golden["bce"] = {"logits": entry(bl), "targets": entry(bt), "loss": float(loss), "dlogits": entry(bl.grad)}

ma = torch.randn(3, 5).requires_grad_()
mb = torch.randn(3, 5).requires_grad_()
loss = F.mse_loss(ma, mb)
loss.backward()
golden["mse"] = {"a": entry(ma), "b": entry(mb), "loss": float(loss), "da": entry(ma.grad), "db": entry(mb.grad)}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "norm_attention.json")
with open(out, "w") as f:
    json.dump({"generator": "make_norm_attention_golden.py", "torch": torch.__version__, **golden}, f, indent=None,
              separators=(",", ":"))
print(out, os.path.getsize(out), "bytes")
