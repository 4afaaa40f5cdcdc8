from ecosort_auth.models import Base
from ecosort_common.migrations import run_migrations

run_migrations(Base.metadata)
