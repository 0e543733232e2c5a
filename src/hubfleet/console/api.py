"""The console's JSON API under /api (placeholder: being written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/api")
