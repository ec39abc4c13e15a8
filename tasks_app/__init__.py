"""Tasks: models, task families, forms, views, the callback receiver, jobs, usage reports."""
