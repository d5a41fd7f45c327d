"""The taskservice reference app: endpoints and tasks on the TaskService interface alone (see README.md)."""
