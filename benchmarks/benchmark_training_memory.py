"""How much GPU memory one brain-size QCResUNet training step needs, worked out on the CPU without a GPU.

    python benchmarks/benchmark_training_memory.py [--batches 1 4] [--no-validation] [--threads 2]

Why: nnQC trains QCResUNet on whole cases (brain configuration: input B x 7 x 160x192x160, the 4 image channels
followed by the 3 region masks, batch 4 as the planner sets it), and whether a step fits a given card, or which
batch size does, should be known before a GPU is rented. This script answers it on any machine in well under a
minute per configuration, for batch 1 and 4, in fp32 (nnQC_train --fp32) and under CUDA fp16 autocast (the
trainer's default on CUDA).

What is measured. The step mirrors nnQCTrainer.train_step: the loader's batch copied to the device, network input
and SEM targets built with nnqc.network_architecture.inputs and nnqc.training.qc_inputs, the network built from
nnQCPlanner's "architecture" entry for a 1 mm 160x192x160 brain (features 32-64-128-256, blocks 3-4-6-3, strides 2
at the stem, the max-pool and stages 2-4, kernels 3, stem 7), its outputs cast to fp32, QCLoss, backward (of the
scaled loss under fp16), gradient clipping at 12, then Adam (lr 2.1e-4, weight decay 1e-4, foreach as on CUDA). One
step runs first so that Adam's moments exist, as in every step but the first; the second step is measured.
Reported, in GiB:
  input              the network input and SEM targets on the device (and anything else built with them);
  saved for bwd      the tensors autograd saves for backward during network + loss forward, counted with
                     torch.autograd.graph.saved_tensors_hooks and deduplicated by storage (a view and its base,
                     or a tensor saved by several ops, count once; storages are told apart by the address of their
                     StorageImpl, `untyped_storage()._cdata`, because fake storages have no data pointer); the input
                     and the parameters are not counted again here, the fp16 copies of the weights are;
  other live         what else is still allocated at the end of the forward pass (the outputs, their fp32
                     copies, the loss), found by tracking every storage an operation allocates (a
                     TorchDispatchMode) and its release (a weak reference to the storage);
  params+grads+Adam  parameters, their gradients and Adam's two moments, all fp32;
  total              the sum of the four: the memory at the end of the forward pass with all gradients counted;
  step peak          the largest amount allocated at any moment of the step (forward, backward with the gradients
                     of the activations, clipping, Adam's temporaries) by the same storage tracking, plus the
                     parameters and Adam's moments that exist before it.

How, without a GPU: the steps run under torch._subclasses.fake_tensor.FakeTensorMode, whose tensors carry exact
shapes, dtypes and storage sizes but no data, so nothing is computed; saved-tensor hooks fire there as on real
tensors (the validation below checks the count against a real step). CUDA autocast cannot be switched on without a
CUDA device, and fake CUDA tensors cannot take part in autograd in a CPU build, so fp16 autocast is emulated: a
TorchFunctionMode applies CUDA autocast's policy to every torch function the network calls while autocast would be
on. The policy is read from the installed torch's ATen/autocast_mode.h, the op lists torch registers for
AutocastCUDA: ops of the lower-precision list (convolutions, linear, bmm, ...) get their floating inputs cast to
fp16, as autocast casts them (the casts are recorded by autograd, so the convolutions save fp16 copies of their
inputs and weights, exactly as under autocast); ops of the fp32 lists (among them the nearest-neighbour upsampling
of the decoder and of the SEM head) get fp16 inputs cast to fp32; promote-list ops get the widest type; every
other op runs in the dtype of its inputs, as under autocast, so instance normalisation runs on fp16 inputs and
gives fp16 outputs (on CUDA nnQC's instance_norms_in_fp32 hook does nothing: it acts only under CPU bf16
autocast). The network's own autocast-off regions (regression head, attention weights) are honoured: a CPU
autocast context is opened only as an on/off signal that those regions switch off, and real CPU autocast is kept
from acting on any op. A check at the dispatch level confirms that every lower-precision op ran on fp16 inputs and
no fp32-list op gave an fp16 output; its result is printed. The gradient scaler is modelled by scaling the loss
and unscaling the gradients in place, which is what it costs in memory (a few scalars).

What it does not capture: cuDNN workspaces (with cudnn.benchmark, as nnQC_train sets it, convolutions may take
extra workspace up to what is free), the CUDA caching allocator's rounding and fragmentation (torch's "reserved"
exceeds "allocated"), the CUDA context and library handles (several hundred MiB outside torch's counters),
torch.compile (the trainer compiles on CUDA; a compiled step may save fewer tensors and fuse temporaries), and
any difference between the torch installed here and the one on the GPU machine in autocast policy or in which
tensors an op saves. A measured peak on the card (benchmarks/gpu_check.py, "peak GPU memory ... allocated") is
the reference these figures approximate from below.

Validation (skip with --no-validation): one real fp32 step, batch 1 at 64x64x64 on the CPU, counted with the same
hooks and storage tracking; the saved-for-backward count must equal the fake count at that size, and the tracked
peak of forward+backward is compared with the increase of the process's resident memory over the step (sampled
every half millisecond from /proc/self/statm), which also holds what the CPU kernels need besides tensors (oneDNN
workspaces, allocator overhead). For that comparison glibc is told to map every allocation over 64 KiB on its own
and give it back when freed (mallopt M_MMAP_THRESHOLD), and freed heap is released before the step; otherwise the
resident memory would keep the warm-up step's freed blocks and hide the step's own peak.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import resource
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.graph import saved_tensors_hooks
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

GIB, MIB = 2 ** 30, 2 ** 20
BRAIN_PATCH = (160, 192, 160)
BRAIN_SPACING = (1.0, 1.0, 1.0)
IMAGE_CHANNELS = 4
BRATS_REGIONS = ((1, 2, 3), (2, 3), (3,))
VALIDATION_PATCH = (64, 64, 64)
INITIAL_LR, WEIGHT_DECAY, GRAD_CLIP = 2.1e-4, 1e-4, 12.0  # nnQCTrainer's defaults (paper)
LOSS_SCALE = 2.0 ** 16  # GradScaler's initial scale


# ---- the network, the batch, the step -----------------------------------------------------------------------------
def brain_network() -> torch.nn.Module:
    """QCResUNet as nnQCPlanner plans it for a 1 mm brain covered by 160x192x160."""
    from nnqc.experiment_planning.planner import nnQCPlanner
    from nnqc.network_architecture import build_network

    planner = nnQCPlanner.__new__(nnQCPlanner)  # only the two methods that need no dataset are used
    topology = planner.network_topology(BRAIN_SPACING, BRAIN_PATCH)
    if tuple(topology["input_shape"]) != BRAIN_PATCH:
        raise RuntimeError(f"the planner chose input shape {topology['input_shape']} for {BRAIN_PATCH}")
    architecture = planner.qcresunet_architecture(topology, IMAGE_CHANNELS, len(BRATS_REGIONS))
    return build_network(architecture["network_class_name"], architecture["arch_kwargs"],
                         architecture["_kw_requires_import"]).train()


def host_batch(batch: int, patch: tuple[int, ...]) -> dict:
    """A batch as nnQCDataLoader delivers it: float32 images, int16 label maps, (B, 2 + 2C) quality."""
    labels = torch.randint(0, 4, (batch, 2, *patch), dtype=torch.int16)
    return {"data": torch.randn(batch, IMAGE_CHANNELS, *patch), "reference": labels[:, :1],
            "candidate": labels[:, 1:], "quality": torch.rand(batch, 2 + 2 * len(BRATS_REGIONS))}


def device_inputs(host: dict):
    """nnQCTrainer._inputs: the batch copied to the device (here: cloned), network input, quality, SEM targets."""
    from nnqc.network_architecture.inputs import network_input
    from nnqc.training.qc_inputs import sem_targets

    images, reference, candidate, quality = (host[k].clone() for k in ("data", "reference", "candidate", "quality"))
    return network_input(images, candidate, BRATS_REGIONS), quality, sem_targets(reference, candidate, BRATS_REGIONS)


def training_step(network, optimizer, loss_fn, host: dict, fp16: bool, meter: StepMemory | None = None,
                  emulation: CudaAutocastEmulation | None = None, after_backward=None) -> None:
    """nnQCTrainer.train_step, with the meter told where the inputs and the forward pass end."""
    optimizer.zero_grad(set_to_none=True)
    meter = meter or StepMemory()
    meter.mark("start")
    x, quality, sem_target = device_inputs(host)
    meter.mark("inputs")
    with meter.counting_saved():
        with emulation.enabled() if fp16 else nullcontext():
            regression, sem_logits = network(x)
        regression, sem_logits = regression.float(), sem_logits.float()  # as nnQCTrainer._run_network
        loss = loss_fn(regression, sem_logits, quality, sem_target)["loss"]
    meter.mark("forward")
    if fp16:  # GradScaler: scaled loss, gradients unscaled in place before clipping
        (loss * LOSS_SCALE).backward()
        with torch.no_grad():
            torch._foreach_mul_([p.grad for p in network.parameters() if p.grad is not None], 1 / LOSS_SCALE)
    else:
        loss.backward()
    meter.mark("backward")
    if after_backward is not None:
        after_backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
    optimizer.step()
    meter.mark("optimizer step")


# ---- counting ------------------------------------------------------------------------------------------------------
def storage_key(t: torch.Tensor) -> int:
    """The identity of a tensor's storage (its StorageImpl's address): shared by views, defined for fake tensors."""
    return t.untyped_storage()._cdata


class StepMemory(TorchDispatchMode):
    """Tracks every storage an operation allocates while active, until it is released, with the running total and
    its peak; counts what autograd saves for backward inside counting_saved(); snapshots at mark()."""

    def __init__(self, checker=None):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        self.saved: dict[int, int] = {}
        self.snapshots: dict[str, dict[int, int]] = {}
        self.peaks: dict[str, int] = {}
        self.checker = checker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                key = storage_key(t)
                if key not in inputs and key not in self.live:  # a new allocation, not a view or in-place result
                    self._allocated(t.untyped_storage(), key)
        if self.checker is not None:
            self.checker.check(func, args, kwargs, out)
        return out

    def _allocated(self, storage, key: int) -> None:
        nbytes = storage.nbytes()
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._released, key, nbytes)

    def _released(self, key: int, nbytes: int) -> None:
        if self.live.get(key) == nbytes:
            del self.live[key]
            self.current -= nbytes

    @contextmanager
    def counting_saved(self):
        def pack(t: torch.Tensor) -> torch.Tensor:
            self.saved[storage_key(t)] = t.untyped_storage().nbytes()
            return t

        with saved_tensors_hooks(pack, lambda t: t):
            yield

    def mark(self, name: str) -> None:
        """Snapshot of the live storages at the end of phase `name` (marks in step order); the peak so far."""
        self.snapshots[name] = dict(self.live)
        self.peaks[name] = self.peak

    def parts(self) -> dict:
        """Bytes: input, saved for backward (beyond input and parameters), other live at the end of the forward pass;
        peaks of forward+backward and of the whole step (allocated during the step only)."""
        forward = self.snapshots["forward"]
        inputs = {k for k in self.snapshots["inputs"] if k in forward}
        saved = {k for k in self.saved if k in forward and k not in inputs}
        other = set(forward) - inputs - saved
        return {"input": sum(forward[k] for k in inputs), "saved": sum(forward[k] for k in saved),
                "other": sum(forward[k] for k in other), "saved_keys": len(self.saved),
                "peak_fwd_bwd": self.peaks["backward"], "peak_step": self.peaks["optimizer step"],
                "peak_phase": next(name for name, peak in self.peaks.items() if peak == self.peak)}


# ---- CUDA fp16 autocast, emulated -----------------------------------------------------------------------------------
FALLBACK_POLICY = {  # a subset of torch's CUDA autocast lists, used only when the installed torch has no headers
    "lower": {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "linear", "matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "einsum"},
    "fp32": {"upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
             "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d", "sum", "softmax", "log_softmax",
             "exp", "log", "pow", "layer_norm", "group_norm", "binary_cross_entropy_with_logits", "l1_loss",
             "mse_loss", "norm"},
    "fp32_set_opt_dtype": {"sum", "softmax", "log_softmax", "cumsum", "prod"},
    "promote": {"addcdiv", "addcmul"},
}
INTERPOLATE_OPS = {"nearest": "upsample_nearest{}d", "nearest-exact": "_upsample_nearest_exact{}d",
                   "linear": "upsample_linear1d", "bilinear": "upsample_bilinear2d", "bicubic": "upsample_bicubic2d",
                   "trilinear": "upsample_trilinear3d", "area": "adaptive_avg_pool{}d"}


def cuda_autocast_policy() -> tuple[dict[str, set[str]], str]:
    """Op names of CUDA autocast's lower-precision, fp32 (of these, the ones given dtype=fp32 instead of cast
    inputs) and promote lists, from the installed torch's ATen/autocast_mode.h (the lists torch registers for
    AutocastCUDA), else the built-in subset."""
    header = os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "autocast_mode.h")
    try:
        with open(header) as f:
            lines = f.read().splitlines()
    except OSError:
        return FALLBACK_POLICY, "built-in subset (torch's headers not installed)"

    def macro(name: str) -> set[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"#define {name}("))
        body = []
        for line in lines[start + 1:]:
            body.append(line)
            if not line.rstrip().endswith("\\"):
                break
        text = "\n".join(body)
        return set(re.findall(r"_\(\s*(?:ADD_NS\()?(\w+)", text))

    try:
        policy = {"lower": macro("AT_FORALL_LOWER_PRECISION_FP"),
                  "fp32": (macro("AT_FORALL_FP32") | macro("AT_FORALL_FP32_SET_OPT_DTYPE")
                           | macro("AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE")),
                  "fp32_set_opt_dtype": macro("AT_FORALL_FP32_SET_OPT_DTYPE"),
                  "promote": macro("AT_FORALL_PROMOTE")}
    except StopIteration:
        return FALLBACK_POLICY, "built-in subset (autocast_mode.h without the op lists)"
    if "conv3d" not in policy["lower"] or "bmm" not in policy["lower"]:
        return FALLBACK_POLICY, "built-in subset (autocast_mode.h not understood)"
    return policy, f"torch {torch.__version__}'s include/ATen/autocast_mode.h"


class CudaAutocastEmulation(TorchFunctionMode):
    """CUDA fp16 autocast's casts applied at the level of torch functions, on any device (see the module docstring).

    On while a CPU autocast context opened by enabled() is on, so that the network's own autocast-off regions
    switch it off; real CPU autocast never acts: it is off while every function runs."""

    SIGNAL_DTYPE = torch.bfloat16  # the dtype of the signalling CPU autocast: a bf16 tensor would betray it

    def __init__(self, policy: dict[str, set[str]]):
        super().__init__()
        self.policy = policy
        self.active = False
        self.casts = {"fp16": 0, "fp32": 0, "promote": 0}
        self.checked = {"lower": 0, "fp32": 0}
        self.violations: list[str] = []

    @contextmanager
    def enabled(self):
        with self, torch.autocast("cpu", dtype=self.SIGNAL_DTYPE):
            yield

    def _aten_name(self, func, args, kwargs) -> str:
        name = getattr(func, "__name__", "")
        name = {"__matmul__": "matmul", "__rmatmul__": "matmul", "__pow__": "pow", "__rpow__": "pow"}.get(name, name)
        if name in ("interpolate", "upsample") and args:
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            name = INTERPOLATE_OPS.get(mode, name).format(args[0].dim() - 2)
        return name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on = torch.is_autocast_enabled("cpu")
        if on:
            name = self._aten_name(func, args, kwargs)
            floating = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()
                        and t.dtype != torch.float64]
            target, kind = None, ""
            if name in self.policy["lower"]:
                target, kind = torch.float16, "fp16"
            elif name in self.policy["fp32"]:
                target, kind = torch.float32, "fp32"
            elif name in self.policy["promote"] and len({t.dtype for t in floating}) > 1:
                target, kind = torch.float32, "promote"
            if target is not None and any(t.dtype != target for t in floating):
                self.casts[kind] += 1
                if name in self.policy["fp32_set_opt_dtype"] and kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}  # what autocast does there: no copy of the input
                else:
                    args, kwargs = tree_map(
                        lambda t: t.to(target) if isinstance(t, torch.Tensor) and t.is_floating_point()
                        and t.dtype != torch.float64 else t, (args, kwargs))
        torch.set_autocast_enabled("cpu", False)
        previous, self.active = self.active, on
        try:
            return func(*args, **kwargs)
        finally:
            self.active = previous
            torch.set_autocast_enabled("cpu", on)

    def check(self, func, args, kwargs, out) -> None:
        """At the dispatch level (after autograd and decompositions): does the op see what CUDA autocast gives it?"""
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(t.dtype == self.SIGNAL_DTYPE for t in outputs):
            self.violations.append(f"{func}: a bf16 output, real CPU autocast acted")
        if not self.active:
            return
        name = func._overloadpacket.__name__
        if name in self.policy["lower"]:
            self.checked["lower"] += 1
            floating = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            if any(t.dtype != torch.float16 for t in floating):
                self.violations.append(f"{func} ran on {sorted({str(t.dtype) for t in floating})}, CUDA: fp16")
        elif name in self.policy["fp32"]:
            self.checked["fp32"] += 1
            if any(t.dtype == torch.float16 for t in outputs):
                self.violations.append(f"{func} gave fp16, CUDA autocast: fp32")


# ---- the measurements -----------------------------------------------------------------------------------------------
def parameter_bytes(network: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in network.parameters())


def measure(batch: int, patch: tuple[int, ...], fp16: bool, policy: dict) -> dict:
    """One fake training step after a fake warm-up step: the parts in bytes (see the module docstring)."""
    from nnqc.training.loss import QCLoss

    emulation = CudaAutocastEmulation(policy) if fp16 else None
    with FakeTensorMode():
        network = brain_network()
        optimizer = torch.optim.Adam(network.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY, foreach=True)
        loss_fn = QCLoss(1.0)
        host = host_batch(batch, patch)
        training_step(network, optimizer, loss_fn, host, fp16, emulation=emulation)  # Adam's moments now exist
        if emulation is not None:
            emulation.casts = dict.fromkeys(emulation.casts, 0)  # count the measured step only
        meter = StepMemory(checker=emulation)
        with meter:
            training_step(network, optimizer, loss_fn, host, fp16, meter, emulation)
        params = parameter_bytes(network)
        moments = sum(s.numel() * s.element_size() for state in optimizer.state.values()
                      for k, s in state.items() if k in ("exp_avg", "exp_avg_sq"))
    result = meter.parts()
    result.update(params=params, grads=params, adam=moments)
    result["total"] = result["input"] + result["saved"] + result["other"] + params * 2 + moments
    result["step_peak"] = params + moments + result["peak_step"]
    if emulation is not None:
        result["emulation"] = emulation
    return result


class RssSampler:
    """The process's resident memory, sampled every half millisecond in a thread (Linux /proc/self/statm)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.baseline = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.read())

    def __exit__(self, *exc):
        self.stop()


def glibc_returns_freed_memory() -> bool:
    """Make glibc serve every allocation over 64 KiB with its own mapping, given back when freed (no dynamic
    threshold), so that the resident memory follows what is allocated instead of keeping freed heap; False where
    the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def release_free_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def validate(patch: tuple[int, ...], policy: dict) -> dict:
    """A real fp32 step at batch 1 (after a real warm-up step) against the fake count at the same size."""
    from nnqc.training.loss import QCLoss

    fake = measure(1, patch, False, policy)
    mmapped = glibc_returns_freed_memory()
    torch.manual_seed(0)
    network = brain_network()
    optimizer = torch.optim.Adam(network.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY)
    loss_fn = QCLoss(1.0)
    host = host_batch(1, patch)
    start = time.perf_counter()
    training_step(network, optimizer, loss_fn, host, False)  # warm-up: Adam's moments, oneDNN's first-use set-up
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    release_free_heap()
    meter = StepMemory()
    use_proc = os.path.exists("/proc/self/statm")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with RssSampler() if use_proc else nullcontext() as sampler, meter:
        training_step(network, optimizer, loss_fn, host, False, meter,
                      after_backward=sampler.stop if sampler is not None else None)
    seconds = time.perf_counter() - start
    real = meter.parts()
    if sampler is not None:
        rss_increase, how = sampler.peak - sampler.baseline, "sampled"
    else:
        rss_increase, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - maxrss_before, "ru_maxrss"
    params = parameter_bytes(network)
    counted = real["input"] + real["saved"] + real["other"] + params  # + the gradients backward allocates
    return {"fake": fake, "real": real, "counted_fwd_bwd": counted, "rss_increase": rss_increase,
            "rss_how": how + (", glibc mmap threshold 64 KiB" if mmapped else ""), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes to work out")
    parser.add_argument("--no-validation", action="store_true", help="skip the real small step on the CPU")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the real validation step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    policy, policy_source = cuda_autocast_policy()
    with FakeTensorMode():
        network = brain_network()
        num_params = sum(p.numel() for p in network.parameters())
    shape = "x".join(map(str, BRAIN_PATCH))
    print(f"QCResUNet, brain configuration of nnQCPlanner: input B x {IMAGE_CHANNELS + len(BRATS_REGIONS)} x {shape}, "
          f"{num_params / 1e6:.2f} M parameters; torch {torch.__version__}")
    print("fake tensors (shapes and dtypes exact, nothing computed); fp16 = CUDA fp16 autocast emulated with the op "
          f"lists of {policy_source}")
    print(f"\n{'batch':>5}  {'precision':<13}{'input':>7}{'saved for bwd':>15}{'other live':>12}"
          f"{'params+grads+Adam':>19}{'total':>8}  |{'step peak':>10}   (GiB)")
    checks = []
    for batch in args.batches:
        for fp16 in (False, True):
            start = time.perf_counter()
            r = measure(batch, BRAIN_PATCH, fp16, policy)
            state = r["params"] + r["grads"] + r["adam"]
            print(f"{batch:>5}  {'fp16 autocast' if fp16 else 'fp32':<13}{r['input'] / GIB:>7.2f}"
                  f"{r['saved'] / GIB:>15.2f}{r['other'] / GIB:>12.2f}{state / GIB:>19.2f}{r['total'] / GIB:>8.2f}"
                  f"  |{r['step_peak'] / GIB:>10.2f}   (peak in {r['peak_phase']}; "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)
            if r["saved_keys"] == 0:
                raise RuntimeError("no saved tensor was seen: the saved-tensor hooks did not fire")
            if fp16:
                e = r["emulation"]
                checks.append(f"batch {batch}: {e.casts['fp16']} functions cast to fp16, {e.casts['fp32']} to fp32; "
                              f"at dispatch {e.checked['lower']} lower-precision and {e.checked['fp32']} fp32-list "
                              f"ops checked, {len(e.violations)} violations" +
                              "".join(f"\n      {v}" for v in e.violations[:10]))
    print("   params+grads+Adam: parameters, gradients, 2 Adam moments, fp32 (each "
          f"{r['params'] / MIB:.0f} MiB); step peak: the most allocated at any moment of the step, same method")
    for line in checks:
        print(f"   fp16 policy check, {line}")

    if not args.no_validation:
        v = validate(VALIDATION_PATCH, policy)
        fake, real = v["fake"], v["real"]
        size = "x".join(map(str, VALIDATION_PATCH))
        match = "equal" if fake["saved"] == real["saved"] else "DIFFERENT"
        print(f"\nvalidation, real fp32 step on the CPU, batch 1, {size} ({v['seconds']:.0f} s for 2 steps): "
              f"saved for backward {real['saved'] / MIB:.1f} MiB counted on real tensors, {fake['saved'] / MIB:.1f} "
              f"MiB on fake ones ({match}); forward+backward: counted {v['counted_fwd_bwd'] / MIB:.1f} MiB (input + "
              f"saved + other live + gradients), tracked peak {real['peak_fwd_bwd'] / MIB:.1f} MiB (fake: "
              f"{fake['peak_fwd_bwd'] / MIB:.1f}), measured peak RSS increase {v['rss_increase'] / MIB:.1f} MiB "
              f"({v['rss_how']}; {v['rss_increase'] / max(real['peak_fwd_bwd'], 1):.2f}x the tracked peak)")
    print(f"\nruntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
