"""Reference trajectories of every optimizer Lingo offers, made by PyTorch (`torch.optim`) and
transformers (`Adafactor`): three parameters (a 5×7 matrix, a 7-vector, a 2×3×4 tensor), four steps
with fixed gradients, every parameter weight-decayed, and the parameters after each step.

    python3 tools/make_optim_fixtures.py      # writes tests/fixtures/optim/trajectories.json
"""
import json
import os

import torch
from transformers.optimization import Adafactor

OUT = "tests/fixtures/optim/trajectories.json"
SHAPES = {"a.weight": (5, 7), "a.bias": (7,), "b.kernel": (2, 3, 4)}
STEPS = 4

CASES = [
    ("adamw", {"type": "adamw", "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1},
     lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    ("adam", {"type": "adam", "lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
     lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("sgd-nesterov", {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", {"type": "adagrad", "lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.1, "eps": 1e-10},
     lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1,
                                    eps=1e-10)),
    ("rmsprop", {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.1},
     lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1)),
    ("rmsprop-centered-momentum", {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": 0.5,
                                   "centered": True},
     lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5, centered=True)),
    ("adafactor-relative", {"type": "adafactor"},
     lambda ps: Adafactor(ps, lr=None, relative_step=True, scale_parameter=True, warmup_init=False)),
    ("adafactor-lr-beta1", {"type": "adafactor", "lr": 0.01, "beta1": 0.9, "weight_decay": 0.1,
                            "scale_parameter": False, "clip_threshold": 0.5},
     lambda ps: Adafactor(ps, lr=0.01, relative_step=False, scale_parameter=False, beta1=0.9, weight_decay=0.1,
                          clip_threshold=0.5)),
]


def main():
    g = torch.Generator().manual_seed(0)
    init = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    grads = [{k: torch.randn(s, generator=g) for k, s in SHAPES.items()} for _ in range(STEPS)]
    out = {"shapes": SHAPES, "init": {k: v.flatten().tolist() for k, v in init.items()},
           "grads": [{k: v.flatten().tolist() for k, v in step.items()} for step in grads], "cases": []}
    for name, config, make in CASES:
        params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        opt = make(list(params.values()))
        after = []
        for step in grads:
            for k, p in params.items():
                p.grad = step[k].clone()
            opt.step()
            after.append({k: p.detach().flatten().tolist() for k, p in params.items()})
        out["cases"].append({"name": name, "optimizer": config, "after": after})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)
    print(OUT, len(CASES), "optimizers")


if __name__ == "__main__":
    main()


def schedules():
    """transformers' schedules (peak 1) over 40 steps with 5 of warm-up, as Lingo's schedule JSON."""
    import transformers as tf
    total, warmup = 40, 5
    cases = [
        ({"kind": "linear"}, lambda o: tf.get_linear_schedule_with_warmup(o, warmup, total)),
        ({"kind": "cosine"}, lambda o: tf.get_cosine_schedule_with_warmup(o, warmup, total)),
        ({"kind": "constant"}, lambda o: tf.get_constant_schedule_with_warmup(o, warmup)),
        ({"kind": "cosine_with_restarts", "cycles": 3},
         lambda o: tf.get_cosine_with_hard_restarts_schedule_with_warmup(o, warmup, total, num_cycles=3)),
        ({"kind": "polynomial", "power": 2.0, "min_lr": 0.1},
         lambda o: tf.get_polynomial_decay_schedule_with_warmup(o, warmup, total, lr_end=0.1, power=2.0)),
    ]
    out = {"total": total, "warmup": warmup, "cases": []}
    for schedule, make in cases:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out["cases"].append({"schedule": schedule, "lrs": lrs})
    path = os.path.join(os.path.dirname(OUT), "schedules.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(path, len(cases), "schedules")


if __name__ == "__main__":
    schedules()
