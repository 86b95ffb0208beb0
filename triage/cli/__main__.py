"""``python -m triage.cli``."""

from triage.cli import app

app()
