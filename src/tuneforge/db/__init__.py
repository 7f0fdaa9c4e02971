"""Database layer; importing ``tuneforge.db.tables`` registers every table on the metadata."""
