"""Django admin for tasks_app."""
