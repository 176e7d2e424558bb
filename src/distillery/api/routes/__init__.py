"""Route modules mirror the URL tree (``chat_completions.py`` serves ``/v1/chat/completions``).

Add a router to ``ROUTERS`` to mount it.
"""

from fastapi import APIRouter

from distillery.api.routes import chat_completions, costs, models

ROUTERS: list[APIRouter] = [chat_completions.router, models.router, costs.router]
