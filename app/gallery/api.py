"""gallery api."""

from fastapi import APIRouter

router = APIRouter()
