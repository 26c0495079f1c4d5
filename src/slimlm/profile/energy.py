"""Energy and CO2e: measured from RAPL counters when the OS exposes them, otherwise estimated.

Where Linux exposes Intel/AMD RAPL (``/sys/class/powercap/intel-rapl:*/energy_uj``, the same counter
CodeCarbon reads on Linux) the package energy over the timed runs is *measured*. Otherwise (VMs, containers,
this 2-core slice) the figure is *estimated* as watts-per-busy-core × busy threads × time, and labelled
``estimated``. The default 4.4 W per core is a server EPYC's TDP share (280 W / 64 cores); set
``SLIMLM_WATTS_PER_CORE`` for your hardware. CO2e = energy × grid intensity (``SLIMLM_GRID_GCO2_PER_KWH``,
default 475 g/kWh, the IEA world average); both are inputs a user can set.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_WATTS_PER_CORE = 4.4
DEFAULT_GRID_GCO2_PER_KWH = 475.0


def _rapl_files() -> list[Path]:
    root = Path("/sys/class/powercap")
    if not root.exists():
        return []
    files = []
    for d in root.glob("intel-rapl:*"):
        if d.name.count(":") == 1 and (d / "energy_uj").exists() and os.access(d / "energy_uj", os.R_OK):
            files.append(d / "energy_uj")
    return files


class EnergyMeter:
    """Read package energy around a block of work: ``with meter: ...``; then ``meter.joules``."""

    def __init__(self, threads: int):
        self.files = _rapl_files()
        self.threads = threads
        self.source = "measured (RAPL)" if self.files else "estimated (TDP share)"
        self.joules = 0.0

    def _read(self) -> int:
        return sum(int(p.read_text()) for p in self.files)

    def add_seconds(self, seconds: float) -> None:
        """Account ``seconds`` of busy time (estimated mode)."""
        if not self.files:
            watts = float(os.environ.get("SLIMLM_WATTS_PER_CORE", DEFAULT_WATTS_PER_CORE)) * self.threads
            self.joules += watts * seconds

    def __enter__(self):
        self._start = self._read() if self.files else 0
        return self

    def __exit__(self, *exc):
        if self.files:
            self.joules += max(0, self._read() - self._start) / 1e6
        return False


def grid_intensity() -> float:
    return float(os.environ.get("SLIMLM_GRID_GCO2_PER_KWH", DEFAULT_GRID_GCO2_PER_KWH))


def co2e_grams(joules: float, gco2_per_kwh: float | None = None) -> float:
    return joules / 3.6e6 * (gco2_per_kwh if gco2_per_kwh is not None else grid_intensity())
