"""A signalling client on a network link of its own: run inside a fresh network namespace
(unshare --net), it waits for the veth end the test moves in, gives it an address, then for
the file where the test writes the room's URL (the server starts once the link is up, to
listen on it), joins the room over WebSocket and keeps reading (so it answers the server's
pings) until the server closes the connection or the link goes down for good.

Prints one JSON line per step on stdout ({"step": "link-up" | "joined" | "event" | "closed"})
so the test that runs it can follow; exits non-zero when a step fails.
"""

import argparse
import json
import subprocess
import sys
import time

from websockets.sync.client import connect

from whip_client import say



def wait_for_link(name, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0:
            return True
        time.sleep(0.05)
    return False


def wait_for_url(path, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as file:
                url = file.read().strip()
            if url:
                return url
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--link", required=True, help="the veth end the test moves into this namespace")
    parser.add_argument("--address", required=True, help="its address with prefix, e.g. 10.77.0.2/30")
    parser.add_argument("--url-file", required=True, help="where ws://server/<code>?peer=..&token=.. appears")
    args = parser.parse_args()

    if not wait_for_link(args.link, 20):
        say("refused", reason=f"no link {args.link}")
        sys.exit(1)
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", args.address, "dev", args.link],
        ["ip", "link", "set", args.link, "up"],
    ):
        subprocess.run(command, check=True)
    say("link-up")
    url = wait_for_url(args.url_file, 60)
    if url is None:
        say("refused", reason="no URL")
        sys.exit(1)

    with connect(url, open_timeout=20, close_timeout=1) as socket:
        first = json.loads(socket.recv(timeout=20))
        if first.get("type") != "joined":
            say("refused", event=first)
            sys.exit(1)
        say("joined")
        try:
            for message in socket:
                say("event", event=json.loads(message))
        except Exception as error:  # the link is gone: the connection ends one way or another
            say("closed", error=str(error))
            return
    say("closed")


if __name__ == "__main__":
    main()
