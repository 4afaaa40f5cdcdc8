from ecosort_common.migrations import run_migrations
from ecosort_waste.models import Base

run_migrations(Base.metadata)
