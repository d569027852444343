"""monitor: polls feeds, matches watchlists, alerts Slack once per story."""

import sys

__version__ = "0.1.0"

# `import httpx` imports httpx's own command-line client, and with it rich, click and
# pygments (which spaCy installs): half of importing httpx, in every process that
# fetches, for a CLI monitor never runs. Marked missing here, httpx takes its own path
# for a CLI whose dependencies are absent (encode/httpx#3547 would import it lazily).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
