"""The parts of scripts/bench.py: timing, torch baselines, run context, sections, limits, report, CLI."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repo: cwd and PYTHONPATH of the processes bench starts
