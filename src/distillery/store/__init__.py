"""The store: one SQLAlchemy implementation for SQLite and PostgreSQL.

``Store.open(url)`` returns a migrated store. Repositories (``CompletionsRepo(store)``, ...) are
small classes in the modules beside this one; they return frozen records, never ORM rows.
"""

from distillery.store.base import Store

__all__ = ["Store"]
