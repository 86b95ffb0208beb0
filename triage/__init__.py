"""Complaint triage core: text pipeline, taxonomy, rules, SLA policy and the service layer.

The core never imports FastAPI or Gradio; the adapters in ``api/`` and ``review_ui/``
call the functions in :mod:`triage.service`.
"""

__version__ = "0.1.0"
