#!/usr/bin/env python3
"""Raw SQLite, no Rust: how many hl7_messages rows this disk commits per second.

A second baseline for bench/mllp.sh. Its own raw baseline writes through sqlx, whose
every statement is a hand-off to the connection's worker thread; this one calls SQLite
directly from one thread (Python's sqlite3 module, the system's SQLite), so that the
cost of the hand-offs can be told from the cost of the disk. Same table as the store's
(crates/store-sqlite/migrations/0007_ehr.sql, foreign keys left out), WAL,
synchronous=FULL, BEGIN IMMEDIATE; rows like the bench's (a 1,872-byte message, an ACK,
a SHA-256 hex digest, a fresh UUID and control id each), seq from MAX(seq) + 1 as the
store computes it.

    bench/hl7-raw-sqlite.py            # 1 and 8 rows per transaction, 4 s each
    bench/hl7-raw-sqlite.py 10 1,8,64  # seconds per run, rows per transaction
"""
import hashlib
import os
import pathlib
import sqlite3
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
BATCHES = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,8").split(",")]

schema = (ROOT / "crates/store-sqlite/migrations/0007_ehr.sql").read_text()
ddl = schema[schema.index("CREATE TABLE hl7_messages") : schema.index("CREATE TABLE record_events")]
ddl = ddl.replace("REFERENCES organizations (id)", "").replace(
    "FOREIGN KEY (org_id, interface_id) REFERENCES hl7_interfaces (org_id, id)", "CHECK (1)"
)
INSERT = (
    "INSERT INTO hl7_messages (id, seq, org_id, interface_id, received_at, sender, control_id,"
    " content_hash, message_type, raw, ack, ack_code, state, result, processed_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (org_id, sender, control_id, content_hash) DO NOTHING RETURNING id"
)


def run(batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rapport-raw-") as d:
        db = sqlite3.connect(os.path.join(d, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(ddl)
        org = uuid.uuid4().bytes
        raw = os.urandom(1872)
        ack = "MSH|^~\\&|RAPPORT|RAPPORT|EPIC|NORTH|20240101120000+0000||ACK^S12^ACK|R1|P|2.5\rMSA|AA|C1"
        n = commits = 0
        start = time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            db.execute("BEGIN IMMEDIATE")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM hl7_messages").fetchone()[0]
            for _ in range(batch):
                n += 1
                db.execute(
                    INSERT,
                    (uuid.uuid4().bytes, seq, org, None, int(time.time() * 1e6), "EPIC|NORTH",
                     f"C{n}", hashlib.sha256(n.to_bytes(8, "little")).hexdigest(), "SIU^S12",
                     raw, ack, "AA", "pending", '{"warnings":[]}', None),
                ).fetchall()
                seq += 1
            db.execute("COMMIT")
            commits += 1
        took = time.perf_counter() - start
        print(f"raw SQLite {sqlite3.sqlite_version} from Python, {batch:>3} rows per transaction: "
              f"{n:,} rows in {commits:,} transactions, {took:.2f} s = {n / took:,.0f} rows/s", flush=True)


print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
for b in BATCHES:
    run(b)
print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
