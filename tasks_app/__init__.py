"""Tasks: models, task families, forms, views, the callback receiver, jobs, the deduction
ledger and budgets. Usage reports live in ``klingweb.reporting``, which reads them."""
