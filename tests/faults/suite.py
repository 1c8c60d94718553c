"""Every fault case, in the order the report lists them: single runs and a sweep's driver and
workers (``cases.py``), then studies shared by many drivers (``driver_cases.py``)."""

from tests.faults import cases, driver_cases

CASES = [*cases.CASES, *driver_cases.CASES]
