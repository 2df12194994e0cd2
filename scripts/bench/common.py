"""Shared by scripts/bench-peers and scripts/bench-compare (standard library only)."""
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
# Never purge freed pages: without this, jemalloc 5.3 sends allocations above 8 MiB (every activation at batch
# 32) to its "oversize" arena, which gives the pages back at once, and each forward pass faults them in again
# (1 M minor faults per EfficientNet batch here, as many as glibc's mmap/munmap). PyTorch's tuning-guide value
# "dirty_decay_ms:9000000000" did not stop that here; -1 does.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"

# Environment configurations: each is a separate process, since these variables are read when the libraries load.
ENV_CONFIGS = {
    "default": {},
    "SkylakeX": {"OPENBLAS_CORETYPE": "SkylakeX"},
    "jemalloc": {"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF},
    "SkylakeX+jemalloc": {"OPENBLAS_CORETYPE": "SkylakeX", "LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF},
}
# What each OPENBLAS_CORETYPE the configurations force needs from the CPU: OpenBLAS obeys the variable without
# checking, so SkylakeX on a CPU without AVX-512 stops on its first illegal instruction.
CORETYPE_FLAGS = {"SkylakeX": ("avx512f", "avx512vl", "avx512bw", "avx512dq")}


def cpu_flags(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def unsupported(env_name, flags):
    """Why this machine cannot run the configuration (None: it can, or the CPU's flags are unknown)."""
    if flags is None:
        return None
    core = ENV_CONFIGS[env_name].get("OPENBLAS_CORETYPE")
    missing = [f for f in CORETYPE_FLAGS.get(core, ()) if f not in flags]
    if not missing:
        return None
    return "skipped: OPENBLAS_CORETYPE=%s needs %s, which this CPU lacks" % (core, ", ".join(missing))


# Variables every configuration starts without, so that "default" is what the libraries choose themselves.
STRIPPED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_PRELOAD", "MALLOC_CONF", "OPENBLAS_VERBOSE",
            "GOTOBLAS_MAIN_FREE")

GROUPS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"]

# Ratio targets (issue 18): ours / best peer configuration >= 1.0 everywhere, W2 >= 1.3.
TARGETS = {"W2": 1.3}
# Efficiency targets (issue 18): FLOP rate / raw sgemm's (tl-bench's "efficiency").
EFFICIENCY_TARGETS = {"W2": 0.65}


def target(wid):
    return TARGETS.get(wid.split("-")[0], 1.0)


def parse_only(text):
    if not text:
        return list(GROUPS)
    groups = []
    for g in text.split(","):
        g = g.strip().upper()
        if not g:
            continue
        g = g.split("-")[0]  # W1-1024 -> W1: a whole group runs
        if g not in GROUPS:
            raise SystemExit("unknown workload %r (known: %s)" % (g, ", ".join(GROUPS)))
        if g not in groups:
            groups.append(g)
    return groups


# tl-bench's order; ids not listed sort after their group's listed ones, by name
ORDER = ["W1-1024", "W1-1024-raw", "W1-256", "W1-256-raw", "W2", "W3", "W4", "W5", "W6", "W7", "W8-28", "W8-224", "W9"]


def sort_key(wid):
    group = wid.split("-")[0]
    try:
        n = int(group[1:])
    except ValueError:
        n = 99
    return (n, ORDER.index(wid) if wid in ORDER else len(ORDER), wid)


def fmt(x):
    if x is None:
        return "-"
    if x >= 1000:
        return "%.0f" % x
    if x >= 100:
        return "%.1f" % x
    return "%.2f" % x


def table(headers, rows, right=None):
    """Plain aligned text table; `right` is the set of column indices to right-align."""
    right = right or set()
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    out = []
    for r in [headers] + rows:
        cells = [(str(c).rjust(w) if i in right else str(c).ljust(w)) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def peer_matrix(peers):
    """Rows: (id, impl), columns: environment configurations; '*' marks the best configuration of a workload."""
    envs = [e for e in ENV_CONFIGS if any(w["env"] == e for w in peers["workloads"])]
    cells, units = {}, {}
    for w in peers["workloads"]:
        key = (w["id"], w["impl"])
        units[key] = w["unit"]
        if "error" in w:
            text = "error"
        else:
            text = fmt(w["throughput"]) + ("*" if w.get("best") else "")
        cells[(key, w["env"])] = text
    keys = sorted(units, key=lambda k: (sort_key(k[0]), k[1]))
    rows = [[k[0], k[1]] + [cells.get((k, e), "-") for e in envs] + [units[k]] for k in keys]
    return table(["id", "peer"] + envs + ["unit"], rows, right=set(range(2, 2 + len(envs))))


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None
