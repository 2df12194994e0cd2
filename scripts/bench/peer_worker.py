"""One process of scripts/bench-peers: runs the selected workloads on every peer implementation in this process's
environment (OPENBLAS_CORETYPE, LD_PRELOAD and the thread variables are set by the caller before any library
loads) and prints one JSON object on stdout. Progress goes to stderr.

Run by scripts/bench-peers with the venv's python (Debian's /usr/bin/python3 + --system-site-packages), e.g.
    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 .build-bench-venv/bin/python scripts/bench/peer_worker.py --only W1

Timing (same as tl-bench): setup once, one warm-up run, then N timed repetitions; each repetition gives a
rate = units of work / seconds; the reported throughput is the median rate (upper median for even N, as
tl-bench), with min and max."""
import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402  (after sys.path)

ARGS = None


def log(msg):
    print("  " + msg, file=sys.stderr, flush=True)


def measure(body, reps):
    body()  # warm-up
    rates = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        t0 = time.perf_counter()
        units = body()
        rates.append(units / (time.perf_counter() - t0))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / reps
    rates.sort()
    # minor page faults per timed run: large when freed memory goes back to the OS and is faulted in again
    return {"throughput": rates[len(rates) // 2], "min": rates[0], "max": rates[-1], "page_faults": round(faults)}


_torch = None


def torch_mod():
    """Imports torch once, with the thread settings (interop threads must be set before any parallel work)."""
    global _torch
    if _torch is None:
        import torch
        torch.set_num_threads(ARGS.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        torch.manual_seed(0)
        _torch = torch
    return _torch


def models(*parts):
    return os.path.join(ARGS.models, *parts)


# ---------------------------------------------------------------------------------------------------------------
# W1: sgemm (same repetition counts as tl-bench: 1 product per timed run at 1024, 16 at 256)

def w1_cases(n):
    """(impl, body, check) for numpy and torch.mm at size n; preallocated outputs, as tl-bench's raw sgemm."""
    reps = 1 if n >= 1024 else 16
    flops = 2.0 * n ** 3 * reps / 1e9
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)

    def numpy_body():
        for _ in range(reps):
            np.matmul(a, b, out=c)
        return flops

    torch = torch_mod()
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)

    def torch_body():
        for _ in range(reps):
            torch.mm(ta, tb, out=tc)
        return flops
    return [("numpy", numpy_body, lambda: float(np.abs(c - ref).max())),
            ("torch.mm", torch_body, lambda: float(np.abs(tc.numpy() - ref).max()))]


def run_w1():
    for n in (1024, 256):
        for impl, body, check in w1_cases(n):
            r = run_one("W1-%d" % n, impl, "GFLOPS", lambda body=body: body)
            if "error" not in r:
                err = check()
                r["max_abs_error"] = err
                if not err < 1e-2:  # float32 sums of n products of [-1, 1] values: ~1e-4 expected
                    r["error"] = "wrong result: max |C - C64| = %g" % err
            yield r


# ---------------------------------------------------------------------------------------------------------------
# onnxruntime: the original ONNX files (W6, W7) and exports of the PyTorch peers' models (W2, W4)

def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = ARGS.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------------------------
# W2 / W3: EfficientNet-Lite0

EFFNET_VARIANTS = ("torch-eager", "torch-channels_last", "torch-ts-frozen")
ONNX_CHECK = 1e-4  # largest |onnxruntime - PyTorch| accepted on the workload's own input


def effnet():
    import effnet_lite0
    return effnet_lite0, effnet_lite0.load(models("efficientnet-lite0", "model.safetensors"))


def freeze_optimize(module, example):
    torch = torch_mod()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        frozen = torch.jit.freeze(traced)
        return torch.jit.optimize_for_inference(frozen)


def image_batch(n):
    torch = torch_mod()
    g = torch.Generator().manual_seed(2)
    # normalised pixels (x - 127) / 128 of random non-zero 8-bit images
    return (torch.randint(1, 256, (n, 3, 224, 224), generator=g).float() - 127) / 128


def onnx_model(name, module, example, input_names, opset):
    """Exports `module` once per bench-peers run into <tmp>/onnx/<name>.onnx (the four configurations' workers
    share it), then opens it in onnxruntime and checks it against the PyTorch module on `example` (max |diff| <=
    ONNX_CHECK, else the configuration reports an error). Returns (session, feed)."""
    torch = torch_mod()
    folder = os.path.join(ARGS.tmp or tempfile.gettempdir(), "onnx")
    path = os.path.join(folder, name + ".onnx")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        part = "%s.%d.part" % (path, os.getpid())
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, part, opset_version=opset, input_names=list(input_names),
                              output_names=["features"], do_constant_folding=True)
        os.replace(part, path)
    s = ort_session(path)
    feed = {n: t.numpy() for n, t in zip(input_names, example)}
    with torch.no_grad():
        want = module(*example).numpy()
    got = s.run(None, feed)[0]
    diff = float(np.abs(got - want).max())
    if not diff <= ONNX_CHECK:
        raise RuntimeError("onnxruntime differs from PyTorch by %.2g (> %g) on %s" % (diff, ONNX_CHECK, path))
    log("%s: exported with opset %d, max |onnxruntime - PyTorch| = %.1e" % (name, opset, diff))
    return s, feed


def ort_body(session, feed, shape, units):
    def body():
        y = session.run(None, feed)[0]
        assert y.shape == shape
        return units
    return body


def w2_setup(variant):
    torch = torch_mod()
    E, net = effnet()
    x = image_batch(32)
    model = E.Features(net).eval()
    if variant == "onnxruntime":
        s, feed = onnx_model("efficientnet-lite0-features", model, (x,), ("images",), 13)
        return ort_body(s, feed, (32, 1280), 32.0)
    if variant == "torch-channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "torch-ts-frozen":
        model = freeze_optimize(model, x)

    def body():
        with torch.inference_mode():
            y = model(x)
        assert y.shape == (32, 1280)
        return 32.0
    return body


W3_FROZEN_BLOCKS = 14  # blocks 14 and 15 (of 0..15) are trained, with the head conv and a new 10-class head


def w3_setup(variant):
    torch = torch_mod()
    E, net = effnet()
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()  # frozen BatchNorm everywhere: running statistics, no updates
    trunk = E.Trunk(net, W3_FROZEN_BLOCKS).eval()
    torch.manual_seed(3)
    top = E.TrainableTop(net, W3_FROZEN_BLOCKS, 10).eval()
    trainable = []
    for name, m in top.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            for p in m.parameters():
                p.requires_grad_(True)
                trainable.append(p)
    x = image_batch(32)
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(4))
    if variant == "torch-channels_last":
        trunk = trunk.to(memory_format=torch.channels_last)
        top = top.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "torch-ts-frozen":
        trunk = freeze_optimize(trunk, x)  # the frozen trunk only; the trained top stays eager
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def body():
        with torch.no_grad():
            h = trunk(x)
        loss = loss_fn(top(h), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return 32.0
    return body


# ---------------------------------------------------------------------------------------------------------------
# W4 / W5: all-MiniLM-L6-v2 with transformers' BertModel

def bert(torchscript=False):
    import transformers
    transformers.logging.set_verbosity_error()
    from transformers import BertModel
    return BertModel.from_pretrained(models("all-MiniLM-L6-v2"), add_pooling_layer=False, torchscript=torchscript,
                                     local_files_only=True).eval()


def token_batch(batch, length, seed):
    torch = torch_mod()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30522, (batch, length), generator=g)  # real word pieces: no [PAD], no specials
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    mask = torch.ones(batch, length, dtype=torch.long)  # every sequence is full length: no padding
    return ids, mask


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def Pooled(model):
    """BertModel + mean pooling as one module (for TorchScript and the ONNX export)."""
    torch = torch_mod()

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return mean_pool(self.m(input_ids=ids, attention_mask=mask)[0], mask)
    return Pooled(model)


def w4_setup(variant):
    torch = torch_mod()
    ids, mask = token_batch(64, 128, 5)
    if variant == "onnxruntime":
        s, feed = onnx_model("minilm-l6-mean-pooled", Pooled(bert(torchscript=True)).eval(), (ids, mask),
                             ("input_ids", "attention_mask"), 14)
        return ort_body(s, feed, (64, 384), 64.0)
    if variant == "transformers-eager":
        model = bert()

        def run():
            return mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
    else:
        model = freeze_optimize(Pooled(bert(torchscript=True)), (ids, mask))

        def run():
            return model(ids, mask)

    def body():
        with torch.inference_mode():
            y = run()
        assert y.shape == (64, 384)
        return 64.0
    return body


def w5_setup(variant):
    torch = torch_mod()
    model = bert()
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.encoder.layer[-2:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    model.eval()  # no dropout (tl-bench's step has none)
    torch.manual_seed(6)
    head = torch.nn.Linear(384, 2)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    ids, mask = token_batch(32, 64, 7)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(8))

    def body():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = loss_fn(head(mean_pool(h, mask)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return 32.0
    return body


# ---------------------------------------------------------------------------------------------------------------
# W6 / W7: onnxruntime on the original openWakeWord ONNX files (no PyTorch peer)

def w6_setup(variant):
    s = ort_session(models("speech-embedding", "melspectrogram.onnx"))
    rng = np.random.default_rng(9)
    # 1 s at 16 kHz, float samples at int16 scale, non-zero
    x = (rng.integers(1, 32768, (256, 16000)) * rng.choice([-1, 1], (256, 16000))).astype(np.float32)
    name = s.get_inputs()[0].name

    def body():
        s.run(None, {name: x})
        return 256.0
    return body


def w7_setup(variant):
    s = ort_session(models("speech-embedding", "embedding_model.onnx"))
    rng = np.random.default_rng(10)
    x = rng.uniform(0.1, 4.0, (256, 76, 32, 1)).astype(np.float32)  # log-mel values after x/10 + 2
    name = s.get_inputs()[0].name

    def body():
        y = s.run(None, {name: x})[0]
        assert y.shape == (256, 1, 1, 96)
        return 256.0
    return body


# ---------------------------------------------------------------------------------------------------------------
# W9: a training step of speech-tl's from-scratch baseline (Sources/SpeechTL/ScratchCNN.swift): three 3x3 conv
# (same padding) + BatchNorm (batch statistics) + ReLU blocks of 16, 32, 64 channels, 2x2 max pooling after the
# first two, global average pooling, a 10-class linear head; AdamW; batch 32 of 97x32 log-mel clips.

def w9_setup(variant):
    torch = torch_mod()
    nn = torch.nn
    torch.manual_seed(9)
    layers, inputs = [], 1
    for i, c in enumerate((16, 32, 64)):
        layers += [nn.Conv2d(inputs, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
        if i < 2:
            layers.append(nn.MaxPool2d(2))
        inputs = c
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).train()
    x = torch.from_numpy(np.random.default_rng(9).uniform(0.1, 4.0, (32, 1, 97, 32)).astype(np.float32))
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(9))
    if variant == "torch-channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def body():
        loss = loss_fn(net(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return 32.0
    return body


# ---------------------------------------------------------------------------------------------------------------
# W8: PNG decode with Pillow (open + convert('RGB') + np.asarray), files written deterministically

def make_pngs(folder):
    """Writes folder/28/*.png (1000 28x28 grey) and folder/224/*.png (200 224x224 RGB) with Pillow's default
    zlib level, seeded; files already there are kept. The content is a smooth random field plus noise
    (compresses like a digit or a photo, not like pure noise). tl-bench decodes the same files when
    TL_BENCH_PNG_DIR=folder (scripts/bench-compare does that)."""
    from PIL import Image
    rng = np.random.default_rng(11)
    paths = {"28": [], "224": []}
    for size in paths:
        os.makedirs(os.path.join(folder, size), exist_ok=True)
    for i in range(1000):
        yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
        cy, cx, r = rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(4, 10)
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = np.clip(blob + rng.normal(0, 8, blob.shape), 1, 255).astype(np.uint8)
        p = os.path.join(folder, "28", "g28_%04d.png" % i)
        if not os.path.exists(p):
            Image.fromarray(img, "L").save(p)
        paths["28"].append(p)
    for i in range(200):
        yy, xx = np.mgrid[0:224, 0:224].astype(np.float32) / 224
        chans = []
        for c in range(3):
            f1, f2, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
            chans.append(128 + 90 * np.sin(f1 * xx * 6.28 + ph) * np.cos(f2 * yy * 6.28))
        img = np.stack(chans, -1) + rng.normal(0, 6, (224, 224, 3))
        img = np.clip(img, 1, 255).astype(np.uint8)
        p = os.path.join(folder, "224", "c224_%04d.png" % i)
        if not os.path.exists(p):
            Image.fromarray(img, "RGB").save(p)
        paths["224"].append(p)
    return paths


_pngs = None


def w8_setup(size):
    from PIL import Image
    global _pngs
    if _pngs is None:
        _pngs = make_pngs(ARGS.png_dir or tempfile.mkdtemp(prefix="tl-bench-peers-png-", dir=ARGS.tmp))
    files = _pngs[size]

    def body():
        for p in files:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
            assert a.shape[2] == 3
        return float(len(files))
    return body


# ---------------------------------------------------------------------------------------------------------------

def run_one(wid, impl, unit, make):
    log("%s %s ..." % (wid, impl))
    t0 = time.perf_counter()
    try:
        body = make()
        r = measure(body, ARGS.repetitions)
        r.update(id=wid, impl=impl, unit=unit)
        log("%s %s: %.1f %s (min %.1f, max %.1f; %d page faults per run) [%.0f s]" % (
            wid, impl, r["throughput"], unit, r["min"], r["max"], r["page_faults"], time.perf_counter() - t0))
    except Exception as e:  # a missing package or model: report it and go on
        r = {"id": wid, "impl": impl, "unit": unit, "error": "%s: %s" % (type(e).__name__, e)}
        log("%s %s FAILED: %s" % (wid, impl, r["error"]))
        if os.environ.get("TL_BENCH_DEBUG"):
            traceback.print_exc()
    gc.collect()
    return r


def workloads(group):
    if group == "W1":
        yield from run_w1()
    elif group == "W2":
        for v in EFFNET_VARIANTS + ("onnxruntime",):
            yield run_one("W2", v, "images/s", lambda v=v: w2_setup(v))
    elif group == "W3":
        for v in EFFNET_VARIANTS:
            yield run_one("W3", v, "images/s", lambda v=v: w3_setup(v))
    elif group == "W4":
        for v in ("transformers-eager", "transformers-ts-frozen", "onnxruntime"):
            yield run_one("W4", v, "sequences/s", lambda v=v: w4_setup(v))
    elif group == "W5":
        yield run_one("W5", "transformers-eager", "sequences/s", lambda: w5_setup("eager"))
    elif group == "W6":
        yield run_one("W6", "onnxruntime", "clips/s", lambda: w6_setup(None))
    elif group == "W7":
        yield run_one("W7", "onnxruntime", "windows/s", lambda: w7_setup(None))
    elif group == "W8":
        for size in ("28", "224"):
            yield run_one("W8-" + size, "Pillow", "images/s", lambda size=size: w8_setup(size))
    elif group == "W9":
        for v in ("torch-eager", "torch-channels_last"):
            yield run_one("W9", v, "clips/s", lambda v=v: w9_setup(v))


def openblas_kernel():
    try:
        from threadpoolctl import threadpool_info
        cores = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
        if cores:
            return "/".join(sorted(set(c or "?" for c in cores)))
    except Exception:
        pass
    return "unknown"


def versions():
    v = {"python": sys.version.split()[0], "numpy": np.__version__}
    for mod in ("torch", "onnxruntime", "transformers", "PIL"):
        if mod in sys.modules:
            v[mod] = getattr(sys.modules[mod], "__version__", "?")
    return v


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="W1,W2,W3,W4,W5,W6,W7,W8,W9")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=os.path.join(HERE, "..", "..", "Models"))
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--png-dir", help="W8 files: DIR/28/*.png and DIR/224/*.png, written first if missing (kept)")
    ap.add_argument("--make-pngs", action="store_true", help="only write the W8 files into --png-dir")
    ARGS = ap.parse_args()
    if ARGS.make_pngs:
        if not ARGS.png_dir:
            ap.error("--make-pngs needs --png-dir")
        make_pngs(ARGS.png_dir)
        return
    results = []
    for group in [g.strip().upper() for g in ARGS.only.split(",") if g.strip()]:
        for r in workloads(group):
            if r:
                results.append(r)
    if "torch" not in sys.modules:
        torch_mod()  # so that the kernel below is the one torch's OpenBLAS runs
    maps = open("/proc/self/maps").read()
    info = {"kernel": openblas_kernel(), "threads": ARGS.threads,
            "malloc": "jemalloc" if "libjemalloc" in maps else "glibc",
            "versions": versions(), "results": results}
    if _pngs is not None and not ARGS.png_dir:
        import shutil
        shutil.rmtree(os.path.dirname(_pngs["28"][0]), ignore_errors=True)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
