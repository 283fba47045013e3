"""jobs webhooks."""

from fastapi import APIRouter

router = APIRouter()
