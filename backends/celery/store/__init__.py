"""The Celery backend's Redis layout: ``records`` (task records), ``scripts`` (their Lua), ``messages``."""
