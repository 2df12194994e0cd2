"""EfficientNet-Lite0 in plain PyTorch (1.13), lukemelas-style parameter names, for the peer benchmarks.

Architecture (see /work/shared/DATA.md): stem 3x3/2 conv to 32, 16 inverted-bottleneck blocks without
squeeze-excite, head 1x1 conv to 1280, global average pool = the 1280-d feature; ReLU6; BatchNorm eps 1e-3;
TensorFlow "SAME" padding (for stride 2 the extra pixel goes bottom/right). Convolutions have no bias."""
import torch
import torch.nn as nn
import torch.nn.functional as F

# (repeats, kernel, stride, expansion, out channels)
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
BN_EPS = 1e-3


class SamePadConv(nn.Conv2d):
    """Conv2d with TF SAME padding. Stride 1 (odd kernel): symmetric, done by the convolution itself.
    Stride 2: asymmetric (less on top/left), done by an explicit zero pad computed from the input size."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride=stride, padding=(k // 2 if stride == 1 else 0), groups=groups,
                         bias=False)
        self.k = k
        self.s = stride

    def forward(self, x):
        if self.s == 1:
            return F.conv2d(x, self.weight, None, 1, self.padding, 1, self.groups)
        h, w = x.shape[-2], x.shape[-1]
        ph = max((-(-h // self.s) - 1) * self.s + self.k - h, 0)
        pw = max((-(-w // self.s) - 1) * self.s + self.k - w, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.s, 0, 1, self.groups)


class Block(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SamePadConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SamePadConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self._conv_stem = SamePadConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for repeats, k, s, e, cout in STAGES:
            for i in range(repeats):
                blocks.append(Block(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv(cin, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def trunk(self, x, upto=None):
        """Stem and blocks [0, upto)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks[:upto]:
            x = b(x)
        return x

    def features(self, x):
        """The 1280-d pooled feature."""
        x = self.trunk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean((2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


class Features(nn.Module):
    """Wrapper whose forward is `features` (what is traced / scripted)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


class Trunk(nn.Module):
    """Stem + blocks [0, upto): the frozen part of the fine-tune workload."""

    def __init__(self, net, upto):
        super().__init__()
        self.net = net
        self.upto = upto

    def forward(self, x):
        return self.net.trunk(x, self.upto)


class TrainableTop(nn.Module):
    """Blocks [start, end) + head conv + BN (frozen, eval) + pool + a new linear head."""

    def __init__(self, net, start, classes):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[start:])
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self.head = nn.Linear(1280, classes)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self.head(x.mean((2, 3)))


def load(path):
    """The model with the weights from Models/efficientnet-lite0/model.safetensors (strict), in eval mode."""
    from safetensors_np import load as load_st
    tensors = {k: torch.from_numpy(v) for k, v in load_st(path).items()}
    net = EfficientNetLite0()
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError("EfficientNet-Lite0 weights do not match: missing %s, unexpected %s" % (missing, unexpected))
    return net.eval()
