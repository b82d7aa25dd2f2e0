#!/usr/bin/env python3
"""The image's HEALTHCHECK: exit 0 when the gateway's ``/health`` answers 200, 1 otherwise (with the reason).

The URL is ``$ICWS_HEALTH_URL``, by default the image's metrics server (``--prometheus-endpoint 0.0.0.0:9000``).
Python is the one HTTP client the slim image has; the standard library is all this needs.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9000/health"
TIMEOUT_S = 4.0  # under the HEALTHCHECK --timeout, so that a hung gateway is reported here, with a reason


def main() -> int:
    url = os.environ.get("ICWS_HEALTH_URL") or DEFAULT_URL
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:  # refused, timed out, a bad URL
        print(f"icws-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"icws-healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
