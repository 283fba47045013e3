"""costs api."""

from fastapi import APIRouter

router = APIRouter()
