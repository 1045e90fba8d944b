"""Adversarial robustness of a classifier and its INT8 version (L-infinity, pixel units).

FGSM (one signed-gradient step) and PGD (random start, ``STEPS`` steps of eps/4, projected)
are crafted on the float model and, separately, through the QDQ model run with
straight-through rounding (the INT8 arithmetic with gradients). Every adversarial batch is
then scored by ONNX Runtime on both real models. Success rate: among the images a model
classified correctly, the share it gets wrong after the attack.
"""

from __future__ import annotations

import numpy as np

from qvision.model.torch_graph import OnnxTorch, import_torch

EPSILONS = (1 / 255, 2 / 255, 4 / 255)
STEPS = 10


def _pixels(pre):
    """(to_pixels, to_input): the preprocessing's normalization and its inverse, on [0, 1]."""
    torch = import_torch()
    mean = torch.tensor(pre.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    k = 255.0 * pre.scale
    return (lambda x: (x * std + mean) / k), (lambda p: (p * k - mean) / std)


def _craft(graph, x, labels, eps, pgd, to_input, rng):
    torch = import_torch()
    loss_fn = torch.nn.CrossEntropyLoss()
    if pgd:
        start = torch.from_numpy(rng.uniform(-eps, eps, x.shape).astype(np.float32))
        adv = (x + start).clamp(0, 1)
    else:
        adv = x.clone()
    for _ in range(STEPS if pgd else 1):
        adv = adv.detach().requires_grad_(True)
        loss = loss_fn(graph(to_input(adv)), labels)
        (grad,) = torch.autograd.grad(loss, adv)
        step = eps / 4 if pgd else eps
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def attack(fp32_model, int8_model, fp32_run, int8_run, batches, pre, epsilons=EPSILONS):
    """Rows of (attack, crafted_on, eps, fp32 success, int8 success, fp32 correct, int8 correct).

    ``batches`` yields (normalized inputs, labels); ``*_run`` score normalized inputs."""
    torch = import_torch()
    graphs = {"fp32": OnnxTorch(fp32_model), "int8 (STE)": OnnxTorch(int8_model)}
    to_pixels, to_input = _pixels(pre)
    keys = [(a, src, e) for e in epsilons for a in ("fgsm", "pgd") for src in graphs]
    fooled = {k: [0, 0] for k in keys}
    correct = [0, 0]
    rng = np.random.default_rng(0)
    for inputs, labels in batches:
        x = to_pixels(torch.from_numpy(inputs))
        y = torch.from_numpy(np.asarray(labels, np.int64))
        ok_f = fp32_run(inputs).argmax(1) == labels
        ok_q = int8_run(inputs).argmax(1) == labels
        correct[0] += int(ok_f.sum())
        correct[1] += int(ok_q.sum())
        for key in keys:
            name, src, eps = key
            adv = to_input(_craft(graphs[src], x, y, eps, name == "pgd", to_input, rng)).numpy()
            fooled[key][0] += int((ok_f & (fp32_run(adv).argmax(1) != labels)).sum())
            fooled[key][1] += int((ok_q & (int8_run(adv).argmax(1) != labels)).sum())
    return [
        (
            a,
            src,
            e,
            fooled[(a, src, e)][0] / max(correct[0], 1),
            fooled[(a, src, e)][1] / max(correct[1], 1),
            *correct,
        )
        for a, src, e in keys
    ]
