"""The image's health check: the service's own HTTP health endpoint when it has one, else its main process.

``PROXIMATE_HEALTH_URL`` names the endpoint (the scheduler's ``http://127.0.0.1:8787/health``, the Prefect
server's ``http://127.0.0.1:4200/api/health``); exit status 0 is healthy, 1 is not.
"""

import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("PROXIMATE_HEALTH_URL")
    if url:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return 0 if response.status == 200 else 1
        except OSError:
            return 1
    # No endpoint (workers run without a dashboard; the autoscaler and the Prefect worker serve none): the main
    # process is alive and not a zombie.
    try:
        with open("/proc/1/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return 1
    return 1 if state in ("Z", "X") else 0


if __name__ == "__main__":
    sys.exit(main())
