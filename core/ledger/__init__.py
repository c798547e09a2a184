"""The ledger: SQLAlchemy Core tables, Alembic migrations and the hot SQL, one function per statement.

Functions here take a Connection and never commit; whoever opened the transaction commits it.
"""
