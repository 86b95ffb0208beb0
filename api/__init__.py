"""The FastAPI adapter: thin routes over :mod:`triage.service` (``api.app:create_app``)."""
