"""pg_tenancy from Python: call tenancy.set_context() at the start of each transaction.

    DATABASE_URL=$(make -s db-url) python examples/python_app.py acme alice

Prints the organization's projects as the user sees them. Works the same with any driver or
ORM: the database, not this code, keeps organizations apart.
"""

import os
import sys

import psycopg
from psycopg import errors


def projects(conn: psycopg.Connection, slug: str, user_id: str) -> list[str]:
    with conn.transaction():
        # A context for the user alone (before an organization is chosen): org_id() answers
        # only for the context's user, and only for organizations it belongs to (NULL otherwise).
        conn.execute("SELECT tenancy.set_user_context(%s)", (user_id,))
        org_id = conn.execute("SELECT tenancy.org_id(%s)", (slug,)).fetchone()[0]
    if org_id is None:
        raise LookupError(f"no organization {slug!r} for {user_id!r}")  # a 404, whether or not it exists
    with conn.transaction():
        # Validated against membership; lasts until this transaction ends.
        conn.execute("SELECT tenancy.set_context(%s, %s)", (org_id, user_id))
        rows = conn.execute("SELECT name FROM app.projects ORDER BY name").fetchall()
    return [name for (name,) in rows]


def main() -> int:
    slug, user_id = sys.argv[1], sys.argv[2]
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        try:
            for name in projects(conn, slug, user_id):
                print(name)
        except LookupError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        except errors.InsufficientPrivilege as e:  # SQLSTATE 42501, e.g. membership revoked meanwhile
            print(f"refused: {e.diag.message_primary}", file=sys.stderr)
            return 1
        # Outside the transaction the context is gone: nothing is visible.
        n = conn.execute("SELECT count(*) FROM app.projects").fetchone()[0]
        print(f"after commit: {n} rows visible")
    return 0


if __name__ == "__main__":
    sys.exit(main())
