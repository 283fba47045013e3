"""Alerts: budget thresholds, the BFL credit runway, bursts of failed jobs, the weekly digest;
delivered as in-app notices, e-mail and a signed webhook."""

#: Beat's task that evaluates every rule for every team.
EVALUATE_ALERTS_TASK = "alerts.evaluate"
#: Evaluate one team's budgets, sent after a charge is committed.
EVALUATE_TEAM_TASK = "alerts.evaluate_team"
#: Beat's weekly digest of spend.
WEEKLY_DIGEST_TASK = "alerts.weekly_digest"
