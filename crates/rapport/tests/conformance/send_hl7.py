"""Sends HL7 files over real MLLP with the `hl7` PyPI package's client.

Usage: send_hl7.py HOST PORT FILE...   Prints a JSON list: for each file, the reply text.
Each file's bytes are sent unchanged (`MLLPClient.send_message` with bytes frames them
as they are; the package's `mllp_send` command would rewrite line endings).
"""
import json
import sys

from hl7.client import MLLPClient


def main():
    host, port, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    replies = []
    with MLLPClient(host, port) as client:
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            reply = client.send_message(data)
            replies.append({"file": path, "reply": reply.decode("utf-8", "replace")})
    json.dump(replies, sys.stdout)


if __name__ == "__main__":
    main()
