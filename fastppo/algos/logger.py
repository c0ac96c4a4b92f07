"""Where training metrics go: CSV, TensorBoard, and a one-line progress bar on stderr."""

from __future__ import annotations

import csv
import os
import sys
import time


class Logger:
    """Writes one row per iteration to ``<log_dir>/progress.csv`` and, if asked, TensorBoard scalars.

    Metric names are those of :func:`fastppo.ppo_loss`'s stats (``policy_loss``, ``value_loss``,
    ``entropy``, ``approx_kl``, ``clipfrac``) plus ``sps``, ``episode_return``, ``episode_length`` and the
    bookkeeping columns (``timesteps``, ``iteration``, ...).
    """

    def __init__(self, log_dir: str | None = None, tensorboard_log: str | None = None):
        self.log_dir = log_dir
        self._csv_file = self._csv = None
        self._fields: list[str] | None = None
        self._tb = None
        if tensorboard_log is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("tensorboard_log needs the tensorboard package: pip install tensorboard") from exc
            self._tb = SummaryWriter(tensorboard_log)
        if log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)

    def record(self, row: dict[str, float]) -> None:
        if self.log_dir is not None:
            if self._csv is None:
                path = os.path.join(self.log_dir, "progress.csv")
                self._fields = list(row)
                self._csv_file = open(path, "w", newline="")
                self._csv = csv.DictWriter(self._csv_file, fieldnames=self._fields, extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow(row)
            self._csv_file.flush()
        if self._tb is not None:
            step = int(row["timesteps"])
            for key, value in row.items():
                if key != "timesteps":
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = self._csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar:
    """``[#####.....] 12,288/50,000  41,230 sps  return 183.2`` on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self._last = total, start, 0.0
        self._t0 = time.perf_counter()
        # Redrawn in place on a terminal; a new line every 10 s when stderr is a file or a pipe.
        self._tty = sys.stderr.isatty()
        self._interval, self._start, self._end = (0.2, "\r", "") if self._tty else (10.0, "", "\n")

    def update(self, done: int, episode_return: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        frac = min(1.0, (done - self.start) / max(1, self.total - self.start))
        sps = (done - self.start) / max(now - self._t0, 1e-9)
        ret = "" if episode_return is None else f"  return {episode_return:.1f}"
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        sys.stderr.write(f"{self._start}[{bar}] {done:,}/{self.total:,}  {sps:,.0f} sps{ret}   {self._end}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
