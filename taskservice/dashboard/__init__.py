"""The built-in dashboard: ``app.include_router(create_dashboard(admin_dependencies=[...]))``."""

from taskservice.dashboard.routes import create_dashboard

__all__ = ["create_dashboard"]
