"""Where training metrics go: Stable-Baselines3's logger protocol and outputs, and a progress bar.

:class:`Logger` has SB3's interface (``record(key, value, exclude=None)``, ``record_mean``,
``dump(step)``, ``name_to_value``, ``get_dir()``, ``close()``), so a script's own scalars
(``model.logger.record("custom/x", v)``), SB3 callbacks that log, and ``model.set_logger(...)`` with an
SB3 logger all work. Its outputs are SB3's: ``"stdout"`` (the metric table ``verbose=1`` prints),
``"csv"`` (``progress.csv``) and ``"tensorboard"``; :func:`configure` builds one as SB3's ``configure``
does. The trainers record SB3's keys with SB3's meanings (``rollout/ep_rew_mean``, ``train/value_loss``,
``time/fps``, ...; the list is in docs/architecture.md).
"""

from __future__ import annotations

import csv
import glob
import os
import sys
import time
from collections import defaultdict

import numpy as np

class Logger:
    """Values recorded between two ``dump`` calls, written to every output at ``dump`` (SB3's Logger).

    Args:
        folder: the run's directory (what ``get_dir`` returns), or None.
        output_formats: the outputs, from :func:`make_output_format` (none: recording only).
    """

    def __init__(self, folder: str | None = None, output_formats: list | None = None):
        self.dir = folder
        self.output_formats = list(output_formats or [])
        self.name_to_value: dict[str, float] = {}
        self.name_to_excluded: dict[str, tuple[str, ...]] = {}
        self._means: dict[str, list[float]] = defaultdict(list)

    def record(self, key: str, value, exclude: str | tuple[str, ...] | None = None) -> None:
        """Log ``value`` under ``key`` at the next ``dump`` (a later record of the same key replaces it).
        ``exclude``: output format name(s) that should not show it."""
        self.name_to_value[key] = value
        self.name_to_excluded[key] = _as_tuple(exclude)

    def record_mean(self, key: str, value, exclude: str | tuple[str, ...] | None = None) -> None:
        """Log the mean of every value recorded under ``key`` until the next ``dump``."""
        self._means[key].append(value)
        self.record(key, float(np.mean(self._means[key])), exclude)

    def dump(self, step: int = 0) -> None:
        """Write the recorded values to every output (``step``: the x-axis, e.g. the timestep), then forget them."""
        for output in self.output_formats:
            output.write(self.name_to_value, self.name_to_excluded, step)
        self.name_to_value.clear()
        self.name_to_excluded.clear()
        self._means.clear()

    def get_dir(self) -> str | None:
        return self.dir

    def close(self) -> None:
        for output in self.output_formats:
            output.close()
        self.output_formats = []


def make_output_format(name: str, folder: str | None):
    """One output: ``"stdout"`` (the metric table), ``"csv"`` (``<folder>/progress.csv``) or
    ``"tensorboard"`` (event files in ``folder``)."""
    if name not in _OUTPUTS:
        raise ValueError(f"output format must be one of {list(_OUTPUTS)}, got {name!r}")
    if name != "stdout":
        if folder is None:
            raise ValueError(f"output format {name!r} writes files: it needs a folder")
        os.makedirs(folder, exist_ok=True)
    return _OUTPUTS[name](folder)


def configure(folder: str | None = None, format_strings: list[str] | None = None) -> Logger:
    """A :class:`Logger` writing ``format_strings`` (default: stdout and csv) into ``folder``, as SB3's."""
    names = ["stdout", "csv"] if format_strings is None else [f for f in format_strings if f]
    return Logger(folder, [make_output_format(f, folder) for f in names])


def run_folder(tensorboard_log: str, name: str, new_run: bool) -> str:
    """SB3's TensorBoard run folders: ``<tensorboard_log>/<name>_<k>``, a new k for each new run, the
    latest one again when training continues (``reset_num_timesteps=False``)."""
    latest = 0
    for path in glob.glob(os.path.join(tensorboard_log, f"{glob.escape(name)}_[0-9]*")):
        stem, _, suffix = os.path.basename(path).rpartition("_")
        if stem == name and suffix.isdigit():
            latest = max(latest, int(suffix))
    return os.path.join(tensorboard_log, f"{name}_{latest + 1 if new_run else latest}")


def _as_tuple(exclude) -> tuple[str, ...]:
    return () if exclude is None else (exclude,) if isinstance(exclude, str) else tuple(exclude)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:<8.3g}"
    return str(value)


class _Stdout:
    """SB3's table: keys grouped under their ``prefix/``, sorted."""

    name = "stdout"

    def __init__(self, folder):
        pass

    def write(self, values: dict, excluded: dict, step: int) -> None:
        rows, group = [], None
        for key in sorted(k for k in values if self.name not in excluded.get(k, ())):
            prefix, _, rest = key.rpartition("/")
            if prefix and prefix != group:
                rows.append((prefix + "/", ""))
                group = prefix
            rows.append((("    " + rest) if prefix else key, _format(values[key])))
        if not rows:
            return
        kw, vw = max(len(k) for k, _ in rows), max(len(v) for _, v in rows)
        line = "-" * (kw + vw + 7)
        out = [line, *(f"| {k:<{kw}} | {v:<{vw}} |" for k, v in rows), line]
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class _Csv:
    """``progress.csv``, one row per dump; a key first seen later adds a column (the file is rewritten
    with the wider header, earlier rows empty there), as SB3's. The file is opened per dump, so a
    logger that is never closed leaves nothing open."""

    name = "csv"

    def __init__(self, folder):
        self.path = os.path.join(folder, "progress.csv")
        self.keys: list[str] = []
        open(self.path, "w").close()

    def write(self, values: dict, excluded: dict, step: int) -> None:
        row = {k: v for k, v in values.items() if self.name not in excluded.get(k, ())}
        new = [k for k in row if k not in self.keys]
        if new:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.keys += new
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    def close(self) -> None:
        pass


class _TensorBoard:
    name = "tensorboard"

    def __init__(self, folder):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("tensorboard_log needs the tensorboard package: pip install tensorboard") from exc
        self.writer = SummaryWriter(log_dir=folder)

    def write(self, values: dict, excluded: dict, step: int) -> None:
        for key, value in values.items():
            if self.name not in excluded.get(key, ()) and isinstance(value, (int, float, np.number)):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_OUTPUTS = {"stdout": _Stdout, "csv": _Csv, "tensorboard": _TensorBoard}


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
