"""Complaint triage core: the domain (text pipeline, taxonomy, rules, SLA policy and clock),
the use cases in :mod:`triage.contexts`, persistence in :mod:`triage.store`, background work
in :mod:`triage.jobs` and the command line in :mod:`triage.cli`.

The core never imports FastAPI or Gradio; the adapters in ``api/`` and ``review_ui/``
call the facade :mod:`triage.service`. ``ARCHITECTURE.md`` has the map.
"""

__version__ = "0.1.0"
