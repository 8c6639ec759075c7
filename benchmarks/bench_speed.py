"""Speed of the fast LiteNeXt against the direct reference implementation.

    python benchmarks/bench_speed.py [--quick] [--threads N] [--cpu-time] [--no-train] [--no-onnx]

CPU (always): inference at 256 x 256, batch 1 and batch 8, and one training step (forward,
backward, NAdam step) at batch 8. The reference is tests/network/reference_litenext.py run on
NCHW tensors with NCHW weights, as a direct implementation would be. The two are measured interleaved in one
process (alternating which goes first) and summarised by medians, so that load from other
processes affects both alike. Inference also runs the same weights exported to ONNX on ONNX
Runtime, with as many threads as torch (when onnx and onnxruntime are installed; --no-onnx skips it).

CUDA (when available): images/s at batch 64 for the fast model in float32 and in bfloat16
autocast, and for the reference in float32.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "network"))
from reference_litenext import reference_forward  # noqa: E402

from napari_litenext.network.model import LiteNeXt  # noqa: E402

SIZE = 256


#: Clock for the CPU measurements: wall time by default; process CPU time with --cpu-time, which
#: with --threads 1 is nearly immune to other processes competing for the cores.
CLOCK = time.perf_counter


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                sync: Callable[[], None] = lambda: None, clock: Callable[[], float] | None = None
                ) -> dict[str, float]:
    """Median seconds per call of each function, the functions run in alternating order."""
    clock = clock or CLOCK
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            start = clock()
            fns[name]()
            sync()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def make_models(device: str = "cpu") -> tuple[LiteNeXt, LiteNeXt]:
    """The fast model and a copy with NCHW weights for the reference, same weights."""
    torch.manual_seed(0)
    fast = LiteNeXt().to(device)
    direct = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    return fast, direct


def onnx_session(model: LiteNeXt):
    """An ONNX Runtime CPU session of ``model`` with torch's thread count, or None without onnx/onnxruntime."""
    try:
        import onnxruntime as ort

        from napari_litenext.exchange.onnx import onnx_bytes
        data = onnx_bytes(model)
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def bench_inference(fast: LiteNeXt, direct: LiteNeXt, batch: int, reps: int, device: str = "cpu",
                    sync: Callable[[], None] = lambda: None, session=None) -> dict[str, float]:
    fast.eval()
    direct.eval()
    x = torch.rand(batch, 3, SIZE, SIZE, device=device)
    fns = {"reference": lambda: reference_forward(direct, x), "fast": lambda: fast(x)}
    if session is not None:
        array = x.cpu().numpy()
        fns["onnxruntime"] = lambda: session.run(None, {"input": array})
    with torch.inference_mode():
        expected = fast(x)
        err = (expected - reference_forward(direct, x)).abs().max().item()
        result = interleaved(fns, reps, sync=sync)
    result["max_abs_diff"] = err
    if session is not None:
        result["onnx_max_abs_diff"] = float(abs(fns["onnxruntime"]()[0] - expected.cpu().numpy()).max())
    return result


def bench_training(fast: LiteNeXt, direct: LiteNeXt, batch: int, reps: int) -> dict[str, float]:
    x = torch.rand(batch, 3, SIZE, SIZE)
    target = (torch.rand(batch, 1, SIZE, SIZE) > 0.5).float()

    def step(model: LiteNeXt, forward: Callable[[torch.Tensor], torch.Tensor],
             optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(forward(x), target).backward()
            optimizer.step()
        model.train()
        return run

    fns = {
        "reference": step(direct, lambda t: reference_forward(direct, t),
                          torch.optim.NAdam(direct.parameters(), lr=1e-3)),
        "fast": step(fast, fast, torch.optim.NAdam(fast.parameters(), lr=1e-3)),
    }
    return interleaved(fns, reps)


def bench_cuda(reps: int, batch: int = 64) -> None:
    fast, direct = make_models("cuda")
    fast.eval()
    direct.eval()
    x = torch.rand(batch, 3, SIZE, SIZE, device="cuda")
    sync = torch.cuda.synchronize

    def fast_bf16() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast(x)

    with torch.inference_mode():
        result = interleaved({"reference fp32": lambda: reference_forward(direct, x),
                              "fast fp32": lambda: fast(x), "fast bf16": fast_bf16},
                             reps, warmup=3, sync=sync, clock=time.perf_counter)
        out32 = fast(x[:8])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out16 = fast(x[:8]).float()
        bf16_err = (out16 - out32).abs().max().item()
        ref_err = (fast(x[:8]) - reference_forward(direct, x[:8])).abs().max().item()
    print(f"\nCUDA ({torch.cuda.get_device_name()}), {SIZE}x{SIZE}, batch {batch}, median of {reps}:")
    for name, seconds in result.items():
        print(f"  {name:15s} {batch / seconds:9.0f} images/s   ({seconds * 1e3 / batch:.3f} ms/image)")
    print(f"  fast fp32 vs reference fp32: {result['reference fp32'] / result['fast fp32']:.2f}x; "
          f"bf16 vs fp32: {result['fast fp32'] / result['fast bf16']:.2f}x")
    print(f"  max |logit diff|: fast fp32 vs reference {ref_err:.1e} (TF32 may be on), "
          f"bf16 vs fp32 {bf16_err:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a third of the time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU runs by process CPU time, not wall time (use with --threads 1 "
                             "on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    reps = {1: 5, 8: 3, "train": 2} if args.quick else {1: 15, 8: 7, "train": 4}

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads of {os.cpu_count()}{load}")
    started = time.perf_counter()
    fast, direct = make_models()
    session = None if args.no_onnx else onnx_session(fast)
    if session is None and not args.no_onnx:
        print("onnx or onnxruntime not installed: ONNX Runtime skipped (pip install 'napari-litenext[exchange]')")
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"CPU inference, {SIZE}x{SIZE}, torch.inference_mode, interleaved medians of {clock}:")
    for batch in (1, 8):
        r = bench_inference(fast, direct, batch, reps[batch], session=session)
        print(f"  batch {batch}: reference {r['reference'] * 1e3 / batch:7.1f} ms/image, "
              f"fast {r['fast'] * 1e3 / batch:6.1f} ms/image, speed-up {r['reference'] / r['fast']:.2f}x "
              f"(max |diff| {r['max_abs_diff']:.1e}, {reps[batch]} rounds)")
        if session is not None:
            print(f"           onnxruntime {r['onnxruntime'] * 1e3 / batch:6.1f} ms/image, torch fast / "
                  f"onnxruntime {r['fast'] / r['onnxruntime']:.2f}x (max |logit diff| {r['onnx_max_abs_diff']:.1e})")
    if not args.no_train:
        r = bench_training(fast, direct, 8, reps["train"])
        print(f"CPU training step (forward + backward + NAdam), batch 8, {SIZE}x{SIZE}:")
        print(f"  reference {r['reference'] * 1e3:.0f} ms, fast {r['fast'] * 1e3:.0f} ms, "
              f"speed-up {r['reference'] / r['fast']:.2f}x ({reps['train']} rounds)")
    print(f"CPU part took {time.perf_counter() - started:.0f} s")
    if torch.cuda.is_available():
        bench_cuda(reps=5 if args.quick else 20)
    else:
        print("CUDA not available: GPU throughput skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
