"""The use cases of the product, one module per capability, layered so imports only point
down (see ARCHITECTURE.md):

``core`` (what every context shares) <- ``audit`` <- ``cases`` <- ``labels``, ``alerts``,
``ingestion``, ``accounts``, ``retraining`` <- ``review``.

Each context takes plain values and returns pydantic views or dicts, never ORM objects.
"""
