"""Runs statements against a Postgres server with psycopg 3 (the extended query protocol) and
prints one JSON answer per statement: {"columns": [...], "rows": [[...], ...]} or
{"sqlstate": "...", "error": "..."}.

Usage: query.py DSN text|binary|ping < statements.json (a JSON list of statements, each a
string or [string, [parameters]] with `%s` placeholders bound server-side as `$n`; with
`binary` the results are asked for in the binary format, as pgx asks for them; `ping` sends
each statement as pgx's Ping does: one simple-protocol query, and prints its result status).
"""

import datetime
import json
import sys

import psycopg


def value(v):
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    return v


def main():
    dsn, mode = sys.argv[1], sys.argv[2]
    statements = json.load(sys.stdin)
    answers = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        for sql in statements:
            params = None
            if isinstance(sql, list):
                sql, params = sql
            if mode == "ping":
                res = conn.pgconn.exec_(sql.encode())
                answers.append({"status": psycopg.pq.ExecStatus(res.status).name})
                continue
            try:
                with conn.cursor(binary=(mode == "binary")) as cur:
                    cur.execute(sql, params)
                    # Statements without rows (BEGIN) have no description.
                    desc = cur.description or []
                    answers.append(
                        {
                            "columns": [d.name for d in desc],
                            "rows": [[value(v) for v in row] for row in cur.fetchall()]
                            if desc
                            else [],
                        }
                    )
                conn.commit()
            except psycopg.Error as e:
                answers.append({"sqlstate": e.sqlstate, "error": str(e)})
                conn.rollback()
    json.dump(answers, sys.stdout)


main()
