"""What the test clients in Python share: their report (one JSON object per line on stdout,
which the harness's `tool` reads), the plain HTTP exchanges of WHIP (RFC 9725), and a WHIP
publisher's command line."""

import argparse
import json
import urllib.error
import urllib.request


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def http(method, url, token=None, body=None):
    """One request with an SDP body and a Bearer token: (status, headers, body text)."""
    headers = {"content-type": "application/sdp"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def publisher_arguments(description):
    """A WHIP publisher's command line: --url, --token, --seconds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="http://<client listener>/whip/<roomId>")
    parser.add_argument("--token", required=True, help="a join token for the room")
    parser.add_argument("--seconds", type=float, default=20, help="how long to stay on air")
    return parser.parse_args()
