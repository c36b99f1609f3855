"""Signs and checks Twilio webhooks with the official `twilio` package's RequestValidator,
for crates/rapport/tests/twilio_conformance.rs.

Reads one JSON job, or a JSON list of jobs, on stdin and prints the result (or the list of
results) as JSON on stdout:

  {"op": "sign", "token": T, "url": U, "params": [[name, value], ...]}
      -> RequestValidator(T).compute_signature(U, params), a string
  {"op": "validate", "token": T, "url": U, "params": [[name, value], ...], "signature": S}
  {"op": "validate", "token": T, "url": U, "body": "<JSON body>", "signature": S}
      -> RequestValidator(T).validate(U, params or body, S), a bool
  {"op": "hash", "body": "<JSON body>"}
      -> RequestValidator("").compute_hash(body), the hex SHA-256 for `bodySHA256`
  {"op": "version"}
      -> twilio.__version__

Params are a list of pairs so that a name may repeat; they reach the library as a
framework's multi-valued form (`getall`, as Flask's MultiDict offers), which is how it
reads repeated names.
"""

import json
import sys

import twilio
from twilio.request_validator import RequestValidator


class FormParams(dict):
    """A submitted form as a web framework hands it over: each name once, every value by
    `getall`."""

    def __init__(self, pairs):
        super().__init__()
        self._values = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)
            self.setdefault(name, value)

    def getall(self, name):
        return list(self._values[name])


def run(job):
    op = job["op"]
    if op == "version":
        return twilio.__version__
    if op == "hash":
        return RequestValidator("").compute_hash(job["body"])
    validator = RequestValidator(job["token"])
    if op == "sign":
        return validator.compute_signature(job["url"], FormParams(job.get("params", [])))
    if op == "validate":
        if "body" in job:
            params = job["body"]
        else:
            params = FormParams(job.get("params", []))
        return validator.validate(job["url"], params, job["signature"])
    raise SystemExit(f"unknown op {op!r}")


def main():
    request = json.load(sys.stdin)
    if isinstance(request, list):
        result = [run(job) for job in request]
    else:
        result = run(request)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
