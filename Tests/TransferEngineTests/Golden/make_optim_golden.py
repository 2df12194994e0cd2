#!/usr/bin/python3
"""Reference values for OptimizerTests, from PyTorch (Debian's python3-torch 1.13).

Runs a few steps of torch.optim.SGD and torch.optim.AdamW on small fixed tensors with fixed gradients (one
gradient per step), with two parameter groups (the second at a tenth of the learning rate) and one parameter
that never gets a gradient, and records the parameters after every step and the final optimizer state. Also
records the learning rates of OneCycleLR and StepLR. Writes optim.json next to this script:

    /usr/bin/python3 Tests/TransferEngineTests/Golden/make_optim_golden.py
"""
import json
import os

import torch

torch.manual_seed(0)
STEPS = 4
SHAPES = {"w": [3, 4], "b": [4], "frozen": [2]}
init = {k: torch.randn(*s) for k, s in SHAPES.items()}
grads = [{k: torch.randn(*SHAPES[k]) for k in ("w", "b")} for _ in range(STEPS)]


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run(make, state_names):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    params["frozen"].requires_grad_(False)
    opt = make(params)
    history = []
    for g in grads:
        opt.zero_grad()
        for k, v in g.items():
            params[k].grad = v.clone()
        opt.step()
        history.append({k: flat(p) for k, p in params.items()})
    state = {}
    for k in ("w", "b"):
        st = opt.state[params[k]]
        for name in state_names:
            state[name + "." + k] = flat(st[name]) if torch.is_tensor(st[name]) else [float(st[name])]
    assert len(opt.state[params["frozen"]]) == 0
    return {"steps": history, "state": state}


def groups(params, lr):
    return [{"params": [params["w"], params["frozen"]]}, {"params": [params["b"]], "lr": lr * 0.1}]


LR = 0.05
out = {
    "init": {k: {"shape": s, "values": flat(init[k])} for k, s in SHAPES.items()},
    "grads": [{k: flat(v) for k, v in g.items()} for g in grads],
    "lr": LR,
    "sgd_nesterov": run(lambda p: torch.optim.SGD(groups(p, LR), lr=LR, momentum=0.9, nesterov=True,
                                                  weight_decay=1e-2), ["momentum_buffer"]),
    "sgd_dampened": run(lambda p: torch.optim.SGD(groups(p, LR), lr=LR, momentum=0.9, dampening=0.1),
                        ["momentum_buffer"]),
    "adamw": run(lambda p: torch.optim.AdamW(groups(p, LR), lr=LR, weight_decay=0.01),
                 ["exp_avg", "exp_avg_sq", "step"]),
}


def schedule_values(make, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


out["onecycle"] = {"max_lr": 0.1, "total": 20,
                   "lrs": schedule_values(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20), 20)}
out["onecycle_short"] = {"max_lr": 2.0, "total": 7,
                         "lrs": schedule_values(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=2.0, total_steps=7), 7)}
out["steplr"] = {"base_lr": 1.0, "every": 3, "gamma": 0.5, "total": 10,
                 "lrs": schedule_values(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 10)}

# Gradient clipping: per-parameter gradients, max norm, the returned norm and the clipped gradients.
clip = {k: torch.nn.Parameter(torch.zeros(*SHAPES[k])) for k in ("w", "b")}
for k in clip:
    clip[k].grad = grads[0][k].clone() * 3
before = {k: flat(clip[k].grad) for k in clip}
norm = torch.nn.utils.clip_grad_norm_(list(clip.values()), max_norm=1.5)
out["clip"] = {"max_norm": 1.5, "grads": before, "norm": float(norm), "clipped": {k: flat(clip[k].grad) for k in clip}}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", path, "with torch", torch.__version__)
