"""Runs a long statement with psycopg 3 and cancels it from another thread after a delay, as
an application (or psql on Ctrl-C) cancels a query: a CancelRequest on a new connection with
the backend's process id and secret key. Prints one JSON object: {"sqlstate", "error",
"seconds"} (the statement's failure and how long it ran), or {"rows": ...} if it finished.

Usage: cancel.py DSN DELAY_SECONDS < statement.sql
"""

import json
import sys
import threading
import time

import psycopg


def main():
    dsn, delay = sys.argv[1], float(sys.argv[2])
    statement = sys.stdin.read()
    with psycopg.connect(dsn, autocommit=True) as conn:
        timer = threading.Timer(delay, conn.cancel)
        start = time.monotonic()
        timer.start()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                answer = {"rows": cur.fetchall()}
        except psycopg.Error as e:
            answer = {
                "sqlstate": e.sqlstate,
                "error": e.diag.message_primary,
                "seconds": time.monotonic() - start,
            }
        timer.cancel()
        # The connection stays usable after a cancelled statement.
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            answer["after"] = cur.fetchall()
    json.dump(answer, sys.stdout)


main()
