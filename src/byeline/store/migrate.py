"""Run the store's Alembic migrations from code, with no ``alembic.ini``.

The scripts live in the package (``byeline/store/migrations``) so an installed wheel migrates its
own database at start-up. To write a new revision during development::

    from alembic import command
    from byeline.store.migrate import alembic_config
    command.revision(alembic_config("sqlite:///dev.db"), "what changed", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

#: Where ``env.py`` and ``versions/`` live.
SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None, *, connection: sa.Connection | None = None) -> Config:
    """Build an Alembic :class:`Config` for the store's migrations.

    Pass an open ``connection`` (what :func:`upgrade` does) or a ``url`` (for offline SQL
    generation and tooling).
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        # configparser interpolation: a literal "%" (e.g. in a password) must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision`` (idempotent: a no-op when current)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection=connection), revision)
