"""Training-job routes (written by the worker/jobs engineer)."""

from fastapi import APIRouter

router = APIRouter(tags=["training jobs"])
