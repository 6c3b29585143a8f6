"""fp32 against bf16 autocast in CPU training, step by step, and which parts (if any) need fp32.

    python benchmarks/compare_training_precision.py [--size 64] [--batch 2] [--steps 12] [--threads 2]

A QCResUNet (the paper's widths, input 7×S×S×S) trained from one initialisation on the same fixed batches by the
steps of nnQCTrainer.train_step (forward, QCLoss in fp32, backward, clipping at 12, Adam at lr 2.1e-4) in fp32 and
under bf16 autocast, the latter also with one part kept in fp32 (regression head, SEM head, instance norms).
Dropout is off so that the runs differ by precision only; a control run in fp32 on inputs rounded to bf16 shows
how far a perturbation that small moves the steps by itself (Adam makes trajectories diverge whatever the
cause). Printed per variant against fp32: the loss at every step
(largest relative difference), the cosine between the first step's gradients, and after the last step the
largest difference of the regression outputs (clamped to [0, 1] as nnQC reports them) and the SEM logit sign
agreement on a held-out batch (eval mode), and the output dtypes autocast gave each kind of layer. Seconds per
step are printed too but are only indicative on a loaded machine.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.network_architecture import QCResUNet
from nnqc.training.cpu_bf16 import instance_norms_in_fp32
from nnqc.training.loss import QCLoss


def _fp32(value):
    if torch.is_tensor(value):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_fp32(v) for v in value)
    return value


def run_in_fp32(module: nn.Module) -> None:
    """Make `module` run outside autocast, on fp32 inputs (the instance keeps its class, so the network's own
    isinstance checks still hold)."""
    original = module.forward

    def forward(*args):
        with torch.autocast("cpu", enabled=False):
            return original(*_fp32(args))

    module.forward = forward


def keep_in_fp32(network: nn.Module, part: str | None) -> nn.Module:
    if part in ("regression head", "instance norms and heads"):
        run_in_fp32(network.regression)
    if part in ("SEM head", "instance norms and heads"):
        run_in_fp32(network.sem_head)
    if part in ("instance norms", "instance norms and heads"):
        instance_norms_in_fp32(network)  # what nnQCTrainer does under CPU bf16
    return network


def make_batch(size: int, batch: int, generator: torch.Generator):
    """Images with a bright lesion, the query's 3 nested region masks, random targets and SEMs."""
    x = torch.randn((batch, 7, size, size, size), generator=generator)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    for b in range(batch):
        centre = torch.rand(3, generator=generator) * size * 0.5 + size * 0.25
        distance = ((grid - centre[:, None, None, None]) ** 2).sum(0).sqrt()
        for c, radius in enumerate((0.3, 0.2, 0.1)):
            x[b, 4 + c] = (distance < radius * size).float()
        x[b, :4] += 2 * x[b, 4]
    quality = torch.rand((batch, 2 + 2 * 3), generator=generator)  # subject level, then per region
    sem_target = torch.rand((batch, 3, size, size, size), generator=generator) < 0.05
    sem_target &= x[:, 4:].bool() | (torch.rand(sem_target.shape, generator=generator) < 0.02)
    return x, quality, sem_target


def layer_dtypes(network: nn.Module, x: torch.Tensor, bf16: bool) -> dict[str, str]:
    seen: dict[str, set] = {}
    hooks = [m.register_forward_hook(lambda m, a, out: seen.setdefault(type(m).__name__, set()).add(
        str(out.dtype).replace("torch.", "")) if torch.is_tensor(out) else None)
        for m in network.modules() if not list(m.children())]
    network.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        network(x)
    for h in hooks:
        h.remove()
    return {k: "/".join(sorted(v)) for k, v in sorted(seen.items())}


def train(network: nn.Module, batches, bf16: bool, round_inputs: bool = False):
    network.train()
    for m in network.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    optimizer = torch.optim.Adam(network.parameters(), 2.1e-4, weight_decay=1e-4)
    loss_fn = QCLoss()
    losses, times, first_grad = [], [], None
    for x, quality, sem_target in batches:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if round_inputs:
            x = x.bfloat16().float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            regression, sem_logits = network(x)
        loss = loss_fn(regression.float(), sem_logits.float(), quality, sem_target)["loss"]
        loss.backward()
        if first_grad is None:
            first_grad = torch.cat([p.grad.double().flatten() for p in network.parameters() if p.grad is not None])
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    return losses, first_grad, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input edge S, at least 64 (default 64)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU native bf16: {cpu_has_native_bf16()} (without it bf16 is emulated and slower; nnQC then trains "
          f"in fp32)")
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(args.size, args.batch, generator) for _ in range(args.steps)]
    held_out = make_batch(args.size, args.batch, generator)[0]
    torch.manual_seed(0)
    initial = QCResUNet(input_channels=7, num_regions=3)
    print("output dtypes under bf16 autocast:", layer_dtypes(initial, held_out[:1], True))

    # the control: fp32 on inputs rounded to bf16, i.e. how far a perturbation as small as bf16's rounding of the
    # input alone moves the steps (later steps diverge through Adam whatever the cause)
    variants = {"fp32": (False, None), "fp32 on bf16-rounded inputs": (False, "round inputs"), "bf16": (True, None),
                "bf16, regression head fp32": (True, "regression head"),
                "bf16, SEM head fp32": (True, "SEM head"), "bf16, instance norms fp32": (True, "instance norms"),
                "bf16, norms + heads fp32": (True, "instance norms and heads")}
    results = {}
    for name, (bf16, part) in variants.items():
        network = keep_in_fp32(copy.deepcopy(initial), part)
        losses, grad, seconds = train(network, batches, bf16, round_inputs=part == "round inputs")
        network.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            regression, sem = network(held_out)
        results[name] = losses, grad, regression.float(), sem.float(), seconds
    losses32, grad32, regression32, sem32, _ = results["fp32"]
    print(f"\n{args.steps} steps, batch {args.batch}, input 7x{args.size}^3, {args.threads} threads; "
          f"fp32 loss {losses32[0]:.4f} -> {losses32[-1]:.4f}")
    print(f"{'variant':<28} {'max rel. loss diff':>18} {'grad cos (step 1)':>18} {'max |reg. diff|':>16} "
          f"{'SEM sign agree':>15} {'s/step':>7}")
    for name, (losses, grad, regression, sem, seconds) in results.items():
        loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, losses32))
        cosine = float(torch.nn.functional.cosine_similarity(grad, grad32, dim=0))
        reg_diff = float((regression.clamp(0, 1) - regression32.clamp(0, 1)).abs().max())
        agree = float(((sem > 0) == (sem32 > 0)).float().mean())
        print(f"{name:<28} {loss_diff:>18.5f} {cosine:>18.5f} {reg_diff:>16.5f} {agree:>15.4%} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
