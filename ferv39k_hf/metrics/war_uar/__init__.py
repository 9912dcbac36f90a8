"""The ``evaluate`` metric module (war_uar.py) and its card (README.md).

This folder is a package only so that ``pip install`` ships both files; load
the metric with ``evaluate.load(ferv39k_hf.metrics.WAR_UAR)`` rather than
importing ``war_uar.py``, which imports ``evaluate``.
"""
