"""The Gradio review UI, mounted on the FastAPI app at ``/review`` (see ``review_ui.app``)."""
