"""The ``triage`` command line, one module per command group:

- :mod:`.training`: ``train``, ``ensure-model``, ``evaluate``, ``audit``, ``pretrain``, ``fetch-checkpoint``
- :mod:`.predicting`: ``predict``
- :mod:`.server`: ``serve``
- :mod:`.accounts`: ``users ...``, ``keys ...``
- :mod:`.learning`: ``retrain``, ``models list|promote|rollback``
- :mod:`.background`: ``worker``, ``scheduler``, ``backfill`` (the task queue)

Command modules import :mod:`.common` (and never this package), so there is no circle.
"""

from __future__ import annotations

import typer

from triage.cli import accounts, background, learning, predicting, server, training

app = typer.Typer(
    help="Triage Chinese after-sales complaints: dispute type, urgency, emotion, escalation.",
    no_args_is_help=True,
    add_completion=False,
)

app.command()(training.train)
app.command("ensure-model")(training.ensure_model)
app.command()(predicting.predict)
app.command()(training.evaluate)
app.command()(training.audit)
app.command()(training.pretrain)
app.command("fetch-checkpoint")(training.fetch_checkpoint)
app.add_typer(accounts.users_app, name="users")
app.add_typer(accounts.keys_app, name="keys")
app.command()(server.serve)
app.command()(learning.retrain)
app.add_typer(learning.models_app, name="models")
app.command()(background.worker)
app.command()(background.scheduler)
app.command()(background.backfill)
