"""The HTTP service: FastAPI app, predictions, bin checks, model registry, training-job API."""
