"""The benchmark study (issue 7): problems x nets x samplers, one command, three presets.

``python benchmarks/study.py PRESET`` (see :mod:`study.cli`). Modules by role: ``preset``
(the TOML presets), ``references`` (held-out sets, exact / MCMC / algebraic references),
``calibration`` (expected coverage, SBC ranks), ``runner`` (train once, sample every cell),
``peer`` (sbi NPSE, optional), ``report`` and ``plots`` (CSV, markdown, PNG).
"""
