"""Tables of the locations service's own database."""

from ecosort_common.db import new_metadata
from ecosort_common.events import processed_events_table
from ecosort_common.outbox import outbox_table
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
processed_events = processed_events_table(Base.metadata)
