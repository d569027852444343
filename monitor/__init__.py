"""monitor: polls feeds, matches watchlists, alerts Slack once per story."""

__version__ = "0.1.0"
