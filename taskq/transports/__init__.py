"""Kombu transports that ship with taskq (the embedded SQLite broker lives in ``sqlite``)."""
