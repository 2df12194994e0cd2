#!/usr/bin/python3
"""Writes conv_pool.json: convolution and pooling cases computed by PyTorch, for ConvPoolTests.

Run with Debian's python3-torch (1.13): /usr/bin/python3 make_conv_pool_golden.py
Tensors are stored NHWC (the engine's layout) as flat lists plus shapes; conv weights keep PyTorch's
[out, in/groups, kh, kw]. TensorFlow SAME padding is emulated with F.pad (the odd pixel bottom/right) followed
by an unpadded convolution. Average pooling uses count_include_pad=False, the engine's default.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)


def flat(t):
    return [float("%.8g" % v) for v in t.reshape(-1).tolist()]


def blob(t):
    return {"shape": list(t.shape), "data": flat(t)}


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def same_pads(h, w, kh, kw, sh, sw, dh=1, dw=1):
    def axis(n, k, s, d):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        return total // 2, total - total // 2
    top, bottom = axis(h, kh, sh, dh)
    left, right = axis(w, kw, sw, dw)
    return [top, bottom, left, right]


cases = []


def conv_case(name, n, c, h, w, o, k, stride=1, pads=(0, 0, 0, 0), same=False, groups=1, dilation=1, bias=True):
    x = torch.randn(n, c, h, w)
    weight = torch.randn(o, c // groups, k, k) * (1 / math.sqrt(c // groups * k * k))
    b = torch.randn(o) * 0.1 if bias else None
    if same:
        pads = same_pads(h, w, k, k, stride, stride, dilation, dilation)
    top, bottom, left, right = pads
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, b, stride=stride, dilation=dilation, groups=groups)
    case = {"name": name, "op": "conv2d", "input": blob(nhwc(x)), "weight": blob(weight),
            "kernel": [k, k], "stride": [stride, stride], "dilation": [dilation, dilation], "groups": groups,
            "same": same, "pads": list(pads), "output": blob(nhwc(y))}
    if b is not None:
        case["bias"] = blob(b)
    cases.append(case)


def pool_case(name, op, n, c, h, w, k, stride, pad=0, count_include_pad=False):
    x = torch.randn(n, c, h, w)
    if op == "maxPool2d":
        y = F.max_pool2d(x, k, stride, pad)
    elif op == "avgPool2d":
        y = F.avg_pool2d(x, k, stride, pad, count_include_pad=count_include_pad)
    else:
        y = x.mean(dim=(2, 3))
    case = {"name": name, "op": op, "input": blob(nhwc(x)), "kernel": [k, k], "stride": [stride, stride],
            "dilation": [1, 1], "groups": 1, "same": False, "pads": [pad] * 4,
            "countIncludePad": count_include_pad,
            "output": blob(nhwc(y) if y.dim() == 4 else y)}
    cases.append(case)


# H=8, W=10 with k=3, s=2 need one pixel of SAME padding per axis: all of it at the bottom/right.
conv_case("conv 3x3 stride 2 SAME", 2, 3, 8, 10, 4, 3, stride=2, same=True)
conv_case("conv 3x3 groups 2 pad 1", 2, 4, 6, 6, 6, 3, pads=(1, 1, 1, 1), groups=2)
# H=11 -> 2/2, W=12 -> 1/2 for k=5, s=2.
# 20 channels: one 16-lane block of the direct kernel plus its scalar tail.
conv_case("depthwise 5x5 stride 2 SAME", 1, 20, 11, 12, 20, 5, stride=2, same=True, groups=20)
conv_case("conv 1x1", 2, 8, 5, 5, 5, 1)
conv_case("conv 3x3 dilation 2 pad 2 no bias", 1, 3, 9, 9, 4, 3, pads=(2, 2, 2, 2), dilation=2, bias=False)
conv_case("conv 3x3 stride 2 explicit asymmetric", 1, 3, 7, 7, 2, 3, stride=2, pads=(0, 1, 1, 0))
pool_case("max pool 2x2 stride 2", "maxPool2d", 2, 3, 6, 8, 2, 2)
pool_case("max pool 3x3 stride 1 pad 1", "maxPool2d", 2, 3, 5, 6, 3, 1, 1)
pool_case("avg pool 3x3 stride 2 pad 1", "avgPool2d", 2, 3, 7, 7, 3, 2, 1)
pool_case("avg pool 3x3 stride 2 pad 1 counting padding", "avgPool2d", 1, 2, 7, 7, 3, 2, 1, count_include_pad=True)
pool_case("global average pool", "globalAveragePool", 2, 6, 4, 5, 1, 1)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_pool.json")
with open(out, "w") as f:
    json.dump({"generator": "make_conv_pool_golden.py, torch " + torch.__version__, "cases": cases}, f,
              separators=(",", ":"))
print("wrote", out, os.path.getsize(out), "bytes")
