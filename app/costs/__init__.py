"""Cost review: the credit ledger, budgets and reservations, reports and the credit balance."""

#: Celery task name of the periodic credit balance refresh (worker/tasks.py, beat schedule).
REFRESH_CREDIT_BALANCE_TASK = "costs.refresh_credit_balance"
