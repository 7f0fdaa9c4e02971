"""Database layer: the schema (``db.tables``, every domain's tables), engine, sessions, scoping."""
