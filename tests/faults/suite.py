"""Every fault case, in the order the report lists them: single runs and a sweep's driver and
workers (``cases.py``), studies shared by many drivers (``driver_cases.py``), then what is read
back damaged, never answers or is not a number: caches, checkpoints, archives, servers and
inputs."""

from tests.faults import (
    archive_cases,
    cache_cases,
    cases,
    checkpoint_cases,
    driver_cases,
    finite_cases,
    network_cases,
)

CASES = [*cases.CASES, *driver_cases.CASES, *cache_cases.CASES, *checkpoint_cases.CASES,
         *archive_cases.CASES, *network_cases.CASES, *finite_cases.CASES]
