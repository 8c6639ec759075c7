"""GUI responsiveness while the Train widget trains, and the cost of training inside napari.

    python benchmarks/bench_gui_latency.py [--steps 20] [--batch 8] [--patch 64] [--rounds 6] [--threads N]
                                           [--json out.json]

Needs a display; without one it re-runs itself under ``xvfb-run`` (scripts/setup.sh --gui installs it).

What is measured, with the DSB fluorescence sample (256 x 256) and its ground truth as the pair:

* event-loop delay: a QTimer in napari's main thread asks to fire every 10 ms; each firing's
  lateness (time since the previous firing minus 10 ms) is recorded from the first to the last
  training step. Reported: median, p99 and max, and the same for an idle viewer for reference.
  The Train widget's own work (progress bar, status text, live plot redraws) is included.
* throughput: training images per second (batch size x steps / time, SRP's second view not
  counted) between the first and the last step, in the Train widget and when iterating
  ``train.train`` directly in the same process without any GUI work ("headless"). Rounds
  alternate the two so that load from other processes affects both alike; reported are the
  medians and the median of the per-round ratios (headless / napari), plus the share of one core
  that napari's main thread used while training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from xvfb import ensure_display  # noqa: E402  (scripts folder)

TICK_MS = 10


def _thread_cpu(tid: int) -> float:
    """CPU seconds used so far by thread ``tid`` of this process (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(delays_ms: list[float]) -> dict[str, float]:
    return {"n_ticks": len(delays_ms), "median_ms": statistics.median(delays_ms) if delays_ms else float("nan"),
            "p99_ms": _percentile(delays_ms, 99), "max_ms": max(delays_ms) if delays_ms else float("nan")}


class TickRecorder:
    """Records how late a 10 ms QTimer fires in the main thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.delays: list[float] = []
        self.recording = False
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.recording:
            self.delays.append(max(0.0, (now - self._last) * 1000 - TICK_MS))
        self._last = now

    def start(self) -> None:
        self.delays = []
        self._last = time.perf_counter()
        self.recording = True

    def stop(self) -> list[float]:
        """Stop recording and return the delays in ms."""
        self.recording = False
        return list(self.delays)


def _config(out: Path, args: argparse.Namespace):
    from napari_litenext.training.loop import TrainConfig

    return TrainConfig(epochs=10_000, lr=1e-3, batch_size=args.batch, patch_size=args.patch, mode="tile",
                       normalisation="percentile", device="cpu", output_dir=str(out), name="bench")


def headless_round(samples, args, out: Path) -> float:
    """Images per second iterating ``train`` directly for ``args.steps`` steps."""
    from napari_litenext.training.loop import train

    times: list[float] = []
    stop = {"now": False}
    for event in train(samples, [], _config(out, args), should_stop=lambda: stop["now"]):
        if event.kind == "step":
            times.append(time.perf_counter())
            if len(times) >= args.steps:
                stop["now"] = True
    return args.batch * (len(times) - 1) / (times[-1] - times[0])


def gui_round(viewer, widget, recorder: TickRecorder, args, out: Path) -> tuple[float, list[float]]:
    """Images per second in the Train widget and the event-loop delays while it trained."""
    widget.recipe.output_folder.value = out
    times: list[float] = []

    def on_event(event) -> None:
        if event.kind == "step":
            times.append(time.perf_counter())
            if len(times) == 1:
                recorder.start()
            if len(times) >= args.steps:
                recorder.recording = False  # what follows (final validation, saving) is not training
                widget.stop()

    widget.start()
    if widget.worker is None:
        raise RuntimeError(f"training did not start: {widget.last_error}")
    from qtpy.QtCore import QEventLoop

    widget.worker.yielded.connect(on_event)
    loop = QEventLoop()
    widget.worker.finished.connect(loop.quit)
    loop.exec()  # the real event loop, as in napari.run()
    delays = recorder.stop()
    if widget.last_error:
        raise RuntimeError(widget.last_error)
    return args.batch * (len(times) - 1) / (times[-1] - times[0]), delays


def idle_delays(recorder: TickRecorder, seconds: float) -> list[float]:
    from qtpy.QtCore import QEventLoop, QTimer

    recorder.start()
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    return recorder.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="alternating headless / GUI rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    ensure_display()

    import napari
    import torch
    from napari_litenext.plugin.sample_data import load_sample
    from napari_litenext.plugin.widgets._layers import LayerPair, training_samples

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="litenext-latency-"))
    import magicgui._util

    # keep the user's remembered widget settings out of it
    magicgui._util.user_cache_dir = lambda *a, **k: tmp / "settings"
    viewer = napari.Viewer(show=True)
    (image, image_kw, _), (labels, labels_kw, _) = load_sample("fluorescence")
    image_layer = viewer.add_image(image, **image_kw)
    labels_layer = viewer.add_labels(labels, **labels_kw)
    _, widget = viewer.window.add_plugin_dock_widget("napari-litenext", "Train")
    r = widget.recipe
    r.epochs.value, r.batch_size.value, r.patch_size.value = 10_000, args.batch, args.patch
    r.learning_rate.value, r.mode.value, r.device.value = 1e-3, "tile", "cpu"
    r.normalisation.value = "percentile"
    widget.validation.validation.value = "train"
    image_box, labels_box = widget.pair_rows()[0]
    image_box.value, labels_box.value = image_layer, labels_layer
    samples = training_samples([LayerPair(image, labels, name="fluorescence")])
    recorder = TickRecorder()
    idle = idle_delays(recorder, 3.0)

    headless, inside, delays, gui_cpu = [], [], [], []
    main_tid = threading.get_native_id()
    for i in range(args.rounds):
        order = ("headless", "gui") if i % 2 == 0 else ("gui", "headless")
        for kind in order:
            out = tmp / f"{kind}-{i}"
            if kind == "headless":
                headless.append(headless_round(samples, args, out))
            else:
                cpu0, wall0 = _thread_cpu(main_tid), time.perf_counter()
                ips, d = gui_round(viewer, widget, recorder, args, out)
                gui_cpu.append((_thread_cpu(main_tid) - cpu0) / (time.perf_counter() - wall0))
                inside.append(ips)
                delays.extend(d)
            print(f"round {i + 1} {kind}: {(headless if kind == 'headless' else inside)[-1]:.1f} images/s",
                  flush=True)
    ratios = [h / g for h, g in zip(headless, inside)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
                   f"{os.getloadavg()[0]:.1f}",
        "settings": {"steps": args.steps, "batch": args.batch, "patch": args.patch, "rounds": args.rounds,
                     "tick_ms": TICK_MS, "srp": True, "loss": "mwl"},
        "idle_delay": _summary(idle),
        "training_delay": _summary(delays),
        "headless_images_per_s": statistics.median(headless),
        "napari_images_per_s": statistics.median(inside),
        "slowdown_median_of_round_ratios": statistics.median(ratios),
        "round_ratios": [round(r, 2) for r in ratios],
        "gui_thread_cpu_share": statistics.median(gui_cpu),
        "plot_repaint_ms_max": max(widget.plot.paint_ms, default=0.0),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
